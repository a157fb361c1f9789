import json
import pickle  # only to plant a malicious file; nothing in the library unpickles
import subprocess
import sys

import pytest
import torch

from diffusion_utilities import BadInput, ContextUnet, load_legacy_pth, load_model, save_model
from diffusion_utilities.weights import check_state_dict


def _save(tmp_path, n_feat=16):
    torch.manual_seed(0)
    model = ContextUnet(3, n_feat, 5, 16).eval()
    path = tmp_path / "m.safetensors"
    card = save_model(model, path, {"diffusion": {"timesteps": 500}, "class_names": ["a", "b", "c", "d", "e"]})
    return model, path, card


def test_save_load_round_trip(tmp_path):
    model, path, card = _save(tmp_path)
    loaded, back = load_model(path)
    x, t = torch.randn(2, 3, 16, 16), torch.rand(2)
    with torch.no_grad():
        assert torch.equal(model(x, t), loaded(x, t))
    assert back["model"] == {"in_channels": 3, "n_feat": 16, "n_cfeat": 5, "height": 16}
    assert json.loads(path.with_suffix(".json").read_text())["sha256"] == card["sha256"]


def test_half_precision_round_trip(tmp_path):
    torch.manual_seed(0)
    model = ContextUnet(3, 16, 5, 16).eval()
    save_model(model, tmp_path / "h.safetensors", {}, half=True)
    loaded, card = load_model(tmp_path / "h.safetensors")
    assert card["dtype"] == "float16" and loaded.init_conv.conv1[0].weight.dtype == torch.float32
    torch.testing.assert_close(loaded.init_conv.conv1[0].weight, model.init_conv.conv1[0].weight, atol=1e-3, rtol=1e-3)


def test_hash_mismatch_names_the_file(tmp_path):
    _, path, _ = _save(tmp_path)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # flip bits in the last tensor
    path.write_bytes(bytes(data))
    with pytest.raises(BadInput, match=r"m\.safetensors does not match the SHA-256 in m\.json"):
        load_model(path)


@pytest.mark.parametrize("damage, message", [
    (lambda p: p.unlink(), "not found"),
    (lambda p: p.write_bytes(b""), "empty"),
    (lambda p: p.write_bytes(p.read_bytes()[:1000]), "not a readable safetensors"),
    (lambda p: p.write_bytes(b"PK\x03\x04 this is a zip, not safetensors" * 10), "not a readable safetensors"),
])
def test_missing_empty_truncated_or_foreign_files(tmp_path, damage, message):
    _, path, _ = _save(tmp_path)
    path.with_suffix(".json").unlink()
    damage(path)
    with pytest.raises(BadInput, match=message):
        load_model(path)


def test_shape_mismatch_is_one_line():
    big = ContextUnet(3, 32, 5, 16).state_dict()
    with pytest.raises(BadInput, match="weights were trained with n_feat=32, model has 16") as e:
        check_state_dict(big, ContextUnet(3, 16, 5, 16))
    assert "\n" not in str(e.value)
    with pytest.raises(BadInput, match="n_cfeat=10, model has 5"):
        check_state_dict(ContextUnet(3, 16, 10, 16).state_dict(), ContextUnet(3, 16, 5, 16))
    with pytest.raises(BadInput, match="height=28, model has 16"):
        check_state_dict(ContextUnet(3, 16, 5, 28).state_dict(), ContextUnet(3, 16, 5, 16))
    course_style = {k: v for k, v in ContextUnet(3, 16, 5, 16).state_dict().items() if "shortcut" not in k}
    with pytest.raises(BadInput, match="2 missing .*course's old ResidualConvBlock"):
        check_state_dict(course_style, ContextUnet(3, 16, 5, 16))


class _Exploit:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (subprocess.call, ([sys.executable, "-c", f"open({str(self.target)!r}, 'w').write('pwned')"],))


def test_malicious_pth_is_refused_and_nothing_runs(tmp_path):
    target = tmp_path / "pwned.txt"
    evil = tmp_path / "model_trained.pth"
    with open(evil, "wb") as f:
        pickle.dump({"init_conv.conv1.0.weight": _Exploit(target)}, f)
    # Prove the planted file really is dangerous when unpickled the unsafe way (in a throwaway process).
    with pytest.raises(BadInput, match="refused to load"):
        load_legacy_pth(evil)
    assert not target.exists()
    subprocess.run([sys.executable, "-c", f"import pickle; pickle.load(open({str(evil)!r}, 'rb'))"], check=False)
    assert target.exists(), "the planted file should run code when unpickled unsafely"


def test_legacy_pth_state_dict_loads(tmp_path):
    sd = ContextUnet(3, 16, 5, 16).state_dict()
    torch.save(sd, tmp_path / "ok.pth")
    back = load_legacy_pth(tmp_path / "ok.pth")
    assert back.keys() == sd.keys()


@pytest.mark.parametrize("damage, message", [
    (lambda p: p.with_suffix(".json").write_text('{"sha256": "ab'), r"m\.json is not valid JSON.*restore the card"),
    (lambda p: p.with_suffix(".json").write_text("[]"), r"m\.json is not a JSON object; restore the card"),
])
def test_damaged_json_card_is_one_line(tmp_path, damage, message):
    _, path, _ = _save(tmp_path)
    damage(path)
    with pytest.raises(BadInput, match=message) as e:
        load_model(path)
    assert "\n" not in str(e.value)


def test_header_card_that_is_not_json(tmp_path):
    from safetensors.torch import save_file

    save_file(ContextUnet(3, 16, 5, 16).state_dict(), str(tmp_path / "h.safetensors"), metadata={"card": "{oops"})
    with pytest.raises(BadInput, match=r"h\.safetensors's header holds a card that is not valid JSON"):
        load_model(tmp_path / "h.safetensors")


def test_card_with_an_unknown_model_field_names_the_file(tmp_path):
    from diffusion_utilities.weights import save_tensors

    card = {"model": {"in_channels": 3, "n_feat": 16, "n_cfeat": 5, "height": 16, "depth": 3}}
    save_tensors(tmp_path / "new.safetensors", ContextUnet(3, 16, 5, 16).state_dict(), card)
    with pytest.raises(BadInput, match=r"new\.safetensors has a card this version cannot use .*'depth'"):
        load_model(tmp_path / "new.safetensors")


def test_training_checkpoint_and_classifier_are_named_as_such(tmp_path):
    from diffusion_utilities.evaluation import SpriteClassifier
    from diffusion_utilities.model import ModelConfig
    from diffusion_utilities.training import TrainConfig, train
    from diffusion_utilities.weights import save_tensors

    train(TrainConfig(epochs=1, n_sprites=10, batch_size=10), tmp_path / "run", model_config=ModelConfig(n_feat=8),
          device="cpu", progress=False)
    with pytest.raises(BadInput, match=r"is a training checkpoint, not model weights; use .*run/model\.safetensors"):
        load_model(tmp_path / "run" / "checkpoint.safetensors")
    save_tensors(tmp_path / "c.safetensors", SpriteClassifier().state_dict(), {"kind": "sprite-classifier"})
    with pytest.raises(BadInput, match="is the evaluation classifier, not a ContextUnet"):
        load_model(tmp_path / "c.safetensors")


def test_export_checks_every_input_before_writing(tmp_path):
    from diffusion_utilities.weights import export_course_weights

    _, path, _ = _save(tmp_path)
    snap = tmp_path / "epoch_01.safetensors"
    snap.write_bytes(path.read_bytes()[:1000])  # a truncated snapshot
    with pytest.raises(BadInput, match="epoch_01.safetensors is not a readable safetensors"):
        export_course_weights(path, tmp_path / "out", {1: snap})
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_export_names_snapshots_as_the_labs_do(tmp_path, capsys):
    from diffusion_utilities.weights import export_course_weights

    _, path, _ = _save(tmp_path)
    written = export_course_weights(path, tmp_path / "out", {1: path, 2: path, 4: path})
    assert sorted(p.name for p in written) == sorted(f"{c}model_{n}.pth" for c in ("", "context_")
                                                     for n in ("trained", "31", "0", "1", "3"))
    err = capsys.readouterr().err  # the labs hard-code n_feat=64: one warning line, not a refusal
    assert err.startswith("warning: ") and err.count("\n") == 1 and "n_feat=16 (the labs use 64)" in err
    for epoch in (0, -1, "final", True):
        with pytest.raises(BadInput, match="snapshot epochs count from 1"):
            export_course_weights(path, tmp_path / "out2", {epoch: path})
    assert not (tmp_path / "out2").exists()


def test_export_keeps_other_weights_unless_told_to_overwrite(tmp_path, capsys):
    from diffusion_utilities.weights import export_course_weights

    _, path, _ = _save(tmp_path)
    model, _ = load_model(path)
    ours = model.state_dict()
    out = tmp_path / "out"
    export_course_weights(path, out)
    export_course_weights(path, out)  # the same tensors again: no refusal
    # the course's own download: exactly our keys and shapes, other values
    torch.save({k: v + 1 for k, v in ours.items()}, out / "context_model_trained.pth")
    before = (out / "context_model_trained.pth").read_bytes()
    with pytest.raises(BadInput, match=r"context_model_trained\.pth already exists and holds other weights; "
                                       r"pass --overwrite to replace them, or choose another --out$"):
        export_course_weights(path, out)
    assert (out / "context_model_trained.pth").read_bytes() == before
    (out / "model_31.pth").write_text("not a state dict")
    with pytest.raises(BadInput, match=r"context_model_trained\.pth already exists and holds other weights "
                                       r"\(2 of the 4 files to write do\)"):
        export_course_weights(path, out)
    export_course_weights(path, out, overwrite=True)
    saved = torch.load(out / "context_model_trained.pth", weights_only=True)
    assert all(torch.equal(saved[k], v) for k, v in ours.items())
    (out / "model_31.pth").unlink()
    (out / "model_31.pth").mkdir()
    with pytest.raises(BadInput, match=r"model_31\.pth is a folder"):
        export_course_weights(path, out, overwrite=True)
