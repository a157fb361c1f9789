"""Progressive distillation (issue 30): the target, the training run, the card and the sampler it names."""

import json

import pytest
import torch

from diffusion_utilities import ContextUnet, load_model
from diffusion_utilities.cli import main
from diffusion_utilities.data import procedural_dataset
from diffusion_utilities.distillation import ddim_jump, distillation_target, own_steps, student_times, target_along
from diffusion_utilities.errors import BadInput
from diffusion_utilities.model import ModelConfig
from diffusion_utilities.sampling import recommended_sampler, sample
from diffusion_utilities.schedule import DiffusionConfig, make_schedule, schedule_from_card
from diffusion_utilities.training import TrainConfig, distillation_loss, train

V = DiffusionConfig(prediction="v", zero_terminal_snr=True)


def _net(seed=0):
    torch.manual_seed(seed)
    return ContextUnet(3, 16, 5, 16).eval()


@pytest.mark.parametrize("diffusion", [V, DiffusionConfig()], ids=["v-zero-snr", "eps-linear"])
@pytest.mark.parametrize("steps", [1, 2, 4, 7])
def test_one_student_step_with_the_target_lands_where_two_teacher_steps_do(diffusion, steps):
    # The defining property of Algorithm 2's target: a network that outputs it takes x_t in one DDIM step to the
    # teacher's x after two. Checked by the library's own sampler step rule, not by the target's algebra.
    schedule, teacher = make_schedule(diffusion), _net()
    gen = torch.Generator().manual_seed(1)
    for i in range(steps):
        x_t = torch.randn(3, 3, 16, 16, generator=gen)
        idx = torch.full((3,), i)
        t, t_mid, t_prev = student_times(schedule, steps, idx)
        assert schedule.grid(steps)[i] == t[0] and schedule.grid(steps)[i + 1] == t_prev[0]
        assert t_prev[0] < t_mid[0] < t[0] and int(t_mid[0]) in schedule.grid(2 * steps)
        with torch.no_grad():
            target = distillation_target(teacher, schedule, x_t, t, t_mid, t_prev)
            x_mid = ddim_jump(schedule, x_t, teacher(x_t, t / schedule.T), t, t_mid)
            two = ddim_jump(schedule, x_mid, teacher(x_mid, t_mid / schedule.T), t_mid, t_prev)
            one = ddim_jump(schedule, x_t, target, t, t_prev)
        torch.testing.assert_close(one, two, atol=2e-4, rtol=1e-4)


def test_a_student_that_is_its_teacher_has_a_positive_loss_and_one_that_is_not_gets_closer():
    schedule = make_schedule(V)
    x0 = torch.rand(16, 3, 16, 16) * 2 - 1
    teacher, student = _net(0), _net(0).train()
    loss = distillation_loss(student, schedule, x0, teacher=teacher, steps=2, gen=torch.Generator().manual_seed(0))
    assert loss.item() > 1e-4  # two small steps are not one big one, even for the same network


def test_sample_and_evaluate_follow_the_card_of_a_student():
    from diffusion_utilities.evaluation import default_rows

    assert default_rows({"distillation": {}, "sampler": {"sampler": "ddim", "steps": 4}})[1:] == (
        "ddim-1", "ddim-2", "ddim-4", "ddim-8")
    schedule = make_schedule(V)
    assert recommended_sampler(schedule, {"sampler": {"sampler": "ddim", "steps": 4}}) == ("ddim", 4)
    assert recommended_sampler(schedule, {}) == ("dpm-solver++", 10)


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher")
    train(TrainConfig(epochs=1, batch_size=50, n_sprites=100, checkpoint_every=0), out, procedural_dataset(100, 0),
          ModelConfig(n_feat=16), V, progress=False)
    return out / "model.safetensors"


def test_a_distillation_round_trains_from_its_teacher_and_says_how_to_sample(tmp_path, teacher_file):
    data = procedural_dataset(100, 0)
    config = TrainConfig(epochs=1, batch_size=50, n_sprites=100, lr=1e-4, checkpoint_every=0, distill_steps=4)
    card = train(config, tmp_path / "s8", data, ModelConfig(n_feat=16), V, progress=False, teacher=teacher_file)
    assert card["sampler"] == {"sampler": "ddim", "steps": 4}
    (round_,) = card["distillation"]["rounds"]
    assert card["distillation"]["teacher"]["steps"] == 8 and round_["teacher_steps"] == 8 and round_["student_steps"] == 4
    assert round_["steps"] == card["steps"] == 2 and round_["wall_time_s"] == card["wall_time_s"]
    assert card["init_from"]["file"] == teacher_file.name and card["final_loss"] > 0
    # the next round halves again, and the chain of rounds goes on in the card
    student = tmp_path / "s8" / "model.safetensors"
    card2 = train(TrainConfig(**{**config.__dict__, "distill_steps": 2}), tmp_path / "s4", data,
                  ModelConfig(n_feat=16), V, progress=False, teacher=student)
    assert [r["student_steps"] for r in card2["distillation"]["rounds"]] == [4, 2]
    assert card2["distillation"]["rounds"][0] == round_  # the first round's record comes from its student's card
    model, saved = load_model(tmp_path / "s4" / "model.safetensors")
    sampler, steps = recommended_sampler(schedule_from_card(saved), saved)
    assert (sampler, steps) == ("ddim", 2)
    x = sample(model, schedule_from_card(saved), 4, sampler=sampler, steps=steps,
               generator=torch.Generator().manual_seed(0)).x
    assert torch.isfinite(x).all()


@pytest.mark.parametrize("kwargs, message", [
    (dict(distill_steps=4), "--distill-steps 4 distils a --teacher"),
    (dict(teacher=True), "add --distill-steps N"),
    (dict(distill_steps=300, teacher=True), "take at most 250"),
    (dict(distill_steps=4, teacher=True, diffusion=DiffusionConfig()), "prediction: teacher v, student eps"),
    (dict(distill_steps=4, teacher=True, model=ModelConfig(n_feat=8)), "n_feat: teacher 16, student 8"),
    (dict(distill_steps=100, substeps=8, teacher=True), "take at most 62"),
    (dict(substeps=4), "--teacher-substeps is distillation's"),
    (dict(inputs="student"), "--distill-inputs is distillation's"),
    (dict(distill_steps=4, teacher=True, inputs="own"), "distill_inputs must be one of data, student, got 'own'"),
])
def test_bad_distillation_arguments_are_one_line_before_any_work(tmp_path, teacher_file, kwargs, message):
    config = TrainConfig(epochs=1, n_sprites=100, distill_steps=kwargs.get("distill_steps", 0),
                         teacher_substeps=kwargs.get("substeps", 2), distill_inputs=kwargs.get("inputs", "data"))
    with pytest.raises(BadInput, match=message):
        train(config, tmp_path / "out", procedural_dataset(100, 0), kwargs.get("model", ModelConfig(n_feat=16)),
              kwargs.get("diffusion", V), progress=False, teacher=teacher_file if kwargs.get("teacher") else None)
    assert not (tmp_path / "out").exists()


def test_a_student_of_a_student_takes_half_its_steps(tmp_path, teacher_file):
    data = procedural_dataset(100, 0)
    config = TrainConfig(epochs=1, batch_size=100, n_sprites=100, checkpoint_every=0, distill_steps=4)
    train(config, tmp_path / "s", data, ModelConfig(n_feat=16), V, progress=False, teacher=teacher_file)
    with pytest.raises(BadInput, match="samples in 4 DDIM steps.*--distill-steps 2"):
        train(config, tmp_path / "t", data, ModelConfig(n_feat=16), V, progress=False,
              teacher=tmp_path / "s" / "model.safetensors")
    finer = TrainConfig(**{**config.__dict__, "distill_steps": 2, "teacher_substeps": 4})
    with pytest.raises(BadInput, match="is a student .* drop --teacher-substeps"):
        train(finer, tmp_path / "u", data, ModelConfig(n_feat=16), V, progress=False,
              teacher=tmp_path / "s" / "model.safetensors")


def test_the_command_line_takes_the_teachers_schedule(tmp_path, teacher_file, capsys):
    code = main(["train", "--out", str(tmp_path / "s"), "--teacher", str(teacher_file), "--distill-steps", "2",
                 "--n-feat", "16", "--epochs", "1", "--n-sprites", "100", "--batch-size", "50", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    card = json.loads((tmp_path / "s" / "model.json").read_text())
    assert card["diffusion"]["prediction"] == "v" and card["diffusion"]["zero_terminal_snr"] is True
    assert card["sampler"] == {"sampler": "ddim", "steps": 2}


@pytest.mark.parametrize("substeps", [4, 8])
def test_a_first_round_may_learn_from_a_finer_teacher_grid(substeps):
    # --teacher-substeps k: one student step lands where k teacher DDIM steps on the k·N grid do.
    schedule, teacher = make_schedule(V), _net()
    gen = torch.Generator().manual_seed(2)
    for i in range(4):
        x_t, idx = torch.randn(2, 3, 16, 16, generator=gen), torch.full((2,), i)
        times = student_times(schedule, 4, idx, substeps)
        assert [int(s[0]) for s in times] == schedule.grid(4 * substeps)[substeps * i:substeps * (i + 1) + 1]
        with torch.no_grad():
            x = x_t
            for a, b in zip(times, times[1:]):
                x = ddim_jump(schedule, x, teacher(x, a / schedule.T), a, b)
            one = ddim_jump(schedule, x_t, target_along(teacher, schedule, x_t, times), times[0], times[-1])
        torch.testing.assert_close(one, x, atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize("steps", [2, 4])
def test_own_steps_are_where_the_models_own_ddim_sampler_is_at_each_step(steps):
    # --distill-inputs student: x_t at step i is the student's own DDIM chain from the noise, as sample() runs
    # it (the engine, a separate code path), in eval mode; the model's mode and BatchNorm statistics are kept.
    schedule, model = make_schedule(V), _net(3).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    noise = torch.randn(steps + 1, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    i = torch.arange(steps + 1)  # a sprite at each step, the last at the end of the chain (t = 0)
    got = own_steps(model, schedule, noise, i, steps)
    assert model.training and all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    torch.testing.assert_close(got[0], noise[0])  # step 0: the noise itself (x_T)
    for k in range(1, steps + 1):
        ref = sample(model.eval(), schedule, 1, sampler="ddim", steps=steps, x_T=noise[k:k + 1], save_every=1)
        model.train()
        torch.testing.assert_close(got[k], ref.frames[k, 0].float(), atol=2e-3, rtol=0)  # frames are float16


def test_a_student_trained_on_its_own_steps_records_it_and_its_loss_differs(tmp_path, teacher_file):
    schedule = make_schedule(V)
    x0, teacher = torch.rand(8, 3, 16, 16) * 2 - 1, load_model(teacher_file)[0].eval()
    student = load_model(teacher_file)[0].train()
    losses = {inputs: distillation_loss(student, schedule, x0, teacher=teacher, steps=4, substeps=2, inputs=inputs,
                                        gen=torch.Generator().manual_seed(0)).item() for inputs in ("data", "student")}
    assert losses["data"] != losses["student"] and all(v > 0 for v in losses.values())
    config = TrainConfig(epochs=1, batch_size=50, n_sprites=100, lr=1e-4, checkpoint_every=0, distill_steps=4,
                         distill_inputs="student")
    card = train(config, tmp_path / "s", procedural_dataset(100, 0), ModelConfig(n_feat=16), V, progress=False,
                 teacher=teacher_file)
    assert card["distillation"]["rounds"][0]["inputs"] == "student" and card["training"]["distill_inputs"] == "student"
