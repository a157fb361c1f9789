import re
from pathlib import Path

import numpy as np
import pytest
import torch

from diffusion_utilities import ContextUnet
from diffusion_utilities.errors import BadInput
from diffusion_utilities.evaluation import ROWS, evaluate, format_table, frechet_distance, load_classifier

CLASSIFIER = Path(__file__).resolve().parents[1] / "weights" / "sprite_classifier.safetensors"
CARD = {"data": {"source": "procedural", "generator_version": "1", "seed": 0, "count": 100},
        "diffusion": {"timesteps": 500, "beta1": 1e-4, "beta2": 0.02, "schedule": "linear"}}


def test_frechet_distance_of_known_gaussians():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, (20000, 3))
    b = rng.normal(0, 2, (20000, 3)) + 1
    # ‖μ₁−μ₂‖² + Σ (σ₁ − σ₂)² per dimension for diagonal covariances: 3 + 3·(1 − 2)² = 6
    assert frechet_distance(a, b) == pytest.approx(6.0, rel=0.03)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_rows_pass_their_sampler_settings_through():
    torch.manual_seed(0)
    model = ContextUnet(n_feat=8).eval()
    rows = evaluate(model, CARD, load_classifier(CLASSIFIER), n=10,
                    rows=("real", "ddim", "ddim-eta1"), log=lambda *_: None)
    by_name = {r.name: r for r in rows}
    assert by_name["ddim-eta1"].eta == 1.0 and by_name["ddim"].eta == 0.0 and by_name["ddim-eta1"].steps == 25
    # fresh noise at every step: the η = 1 samples differ from the deterministic ones of the same seed
    assert by_name["ddim-eta1"].fid != by_name["ddim"].fid
    assert by_name["real"].class_accuracy > 0.9  # the classifier on real sprites
    table = format_table(rows)
    assert "ddim-eta1" in table and all(name in ROWS for name in by_name)


def test_unknown_row_is_refused():
    with pytest.raises(BadInput, match="unknown evaluation row"):
        evaluate(ContextUnet(n_feat=8).eval(), CARD, load_classifier(CLASSIFIER), n=4,
                 rows=("ddim-eta2",))


@pytest.mark.slow
def test_update_card_merges_rows_measured_at_different_times(tmp_path):
    import json
    import subprocess
    import sys

    from diffusion_utilities import save_model

    torch.manual_seed(0)
    weights = tmp_path / "tiny.safetensors"
    save_model(ContextUnet(n_feat=8).eval(), weights, {**CARD, "model": {"in_channels": 3, "n_feat": 8, "n_cfeat": 5, "height": 16}})
    root = Path(__file__).resolve().parents[1]
    base = [sys.executable, "-m", "diffusion_utilities", "evaluate", "--weights", str(weights), "--n", "6",
            "--classifier", str(CLASSIFIER), "--update-card", "--json"]
    for rows in ("real,ddim", "ddim-10,ddim"):
        subprocess.run([*base, "--rows", rows], cwd=root, check=True, capture_output=True)
    entry = json.loads(weights.with_suffix(".json").read_text())["evaluation"]["n6_seed0"]
    assert [r["name"] for r in entry["rows"]] == ["real", "ddim", "ddim-10"]
    assert len(entry["commands"]) == 2


def test_update_card_without_a_card_fails_before_sampling(tmp_path, monkeypatch, capsys):
    from diffusion_utilities import cli, save_model

    weights = tmp_path / "tiny.safetensors"
    save_model(ContextUnet(n_feat=8).eval(), weights, CARD)
    monkeypatch.setattr(cli, "evaluate", lambda *a, **k: pytest.fail("evaluated before checking the card"))
    args = ["evaluate", "--weights", str(weights), "--n", "6", "--rows", "real,ddim", "--device", "cpu", "--update-card"]
    weights.with_suffix(".json").unlink()
    assert cli.main(args) == 2
    assert re.search(r"--update-card needs the card .*tiny\.json", capsys.readouterr().err)
    weights.with_suffix(".json").write_text("{")
    assert cli.main(args) == 2
    assert "tiny.json is not valid JSON" in capsys.readouterr().err


def test_rows_longer_than_T_fail_before_any_row():
    card = {**CARD, "diffusion": {**CARD["diffusion"], "timesteps": 10}}
    logged = []
    with pytest.raises(BadInput, match="row 'ddim' takes 25 sampler steps but the model has T=10; choose --rows from "
                                       "real, ddim-10, dpm-solver"):
        evaluate(ContextUnet(n_feat=8).eval(), card, load_classifier(CLASSIFIER), n=4, rows=("real", "ddim"),
                 log=logged.append)
    assert logged == []  # not even the real row was measured


def test_missing_classifier_says_how_to_make_one(tmp_path):
    with pytest.raises(BadInput, match=r"not found: .*c\.safetensors; pass --classifier FILE, or create them with "
                                       r"`python -m diffusion_utilities train-classifier --out"):
        load_classifier(tmp_path / "c.safetensors")


def test_train_classifier_refuses_too_few_sprites(tmp_path):
    from diffusion_utilities.evaluation import train_classifier

    with pytest.raises(BadInput, match="2 training sprites do not cover all 5 classes"):
        train_classifier(tmp_path / "c.safetensors", n_train=2, n_test=10, epochs=1, progress=False)
    assert not (tmp_path / "c.safetensors").exists()


@pytest.mark.parametrize("setup, out, message", [
    (lambda d: (d / "c.safetensors").mkdir(), "c.safetensors", "is a folder"),
    (lambda d: (d / "c.json").mkdir(), "c.safetensors", r"c\.json is a folder"),
    (lambda d: (d / "f").write_text(""), "f/c.safetensors", "f is a file; pass --out a path in a folder"),
    (lambda d: None, "c.json", "must name a .safetensors file"),
])
def test_train_classifier_checks_its_out_path_before_training(tmp_path, setup, out, message):
    from diffusion_utilities.evaluation import train_classifier

    setup(tmp_path)
    with pytest.raises(BadInput, match=message):
        train_classifier(tmp_path / out, n_train=100, n_test=10, epochs=1, progress=False)
    assert [p for p in tmp_path.rglob("c.*") if p.is_file()] == []  # neither the weights nor their card


def test_train_classifier_never_replaces_a_model(tmp_path):
    from diffusion_utilities import ContextUnet, save_model
    from diffusion_utilities.evaluation import train_classifier

    save_model(ContextUnet(3, 8, 5, 16), tmp_path / "model.safetensors", {"diffusion": {}})
    before = (tmp_path / "model.safetensors").read_bytes()
    with pytest.raises(BadInput, match="exists and is not a sprite classifier"):
        train_classifier(tmp_path / "model.safetensors", n_train=100, n_test=10, epochs=1, progress=False)
    assert (tmp_path / "model.safetensors").read_bytes() == before


def test_the_seed_is_a_whole_number_numpy_ones_too():
    # issue 33's re-walk: np.int64 was a TypeError deep in torch, 1.5 a RuntimeError
    import numpy as np

    model, classifier = ContextUnet(n_feat=8).eval(), load_classifier(CLASSIFIER)
    rows = evaluate(model, CARD, classifier, n=4, rows=("ddim-5",), seed=np.int64(3), log=lambda *_: None)
    assert rows[0].name == "ddim-5"
    with pytest.raises(BadInput, match="seed must be a whole number"):
        evaluate(model, CARD, classifier, n=4, rows=("ddim-5",), seed=1.5, log=lambda *_: None)
