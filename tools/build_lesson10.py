"""Writes notebooks/10_distillation.ipynb from the cells below (outputs empty; run it with
tools/run_notebooks.py). Kept so that the lesson's source reads as plain Python in review."""

from pathlib import Path

from lesson_builder import CODE, IGNORE, MD, build

CELLS = [
(MD, r"""# 10 · Distillation: sprites in one to four network calls

Lesson 8's v-model draws sprites as good as DDPM's 500 steps in 10 network calls, and lesson 9's flow
model in about 17. Today's fast image models go further, to between one and four calls, by
**distillation**: a second network, the *student*, is trained to jump in one step as far as its
*teacher* goes in several. This lesson does the first method that worked well,
**progressive distillation** (Salimans & Ho 2022, "Progressive Distillation for Fast Sampling of
Diffusion Models", the paper that introduced v-prediction for exactly this), on lesson 8's v-model:

1. why a few deterministic steps fail without distillation: they draw averages;
2. the student's target, derived, and written by you;
3. one round run live: a student that samples in 2 steps learns from a teacher's 4;
4. the shipped students, three and four rounds on from lesson 8's model: same noise through teacher
   and students, quality and time against calls for all of the course's models;
5. what distillation costs: variety, measured, and what guidance does to a student;
6. what to take away.

Other routes to a few calls exist: consistency models (Song et al. 2023) and rectified-flow
"reflow" (Liu et al. 2023), which straightens lesson 9's paths before distilling them. Progressive
distillation needs nothing but the DDIM step of lesson 7 and the training loop of lesson 5."""),
(CODE, r"""import copy
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from diffusion_utilities import CLASS_NAMES, load_model_and_schedule, sample, sprites_to_tensor
from diffusion_utilities.data import procedural_dataset
from diffusion_utilities.devices import pick_device
from diffusion_utilities.evaluation import (REFERENCE_SEED, class_accuracy, classifier_features, load_classifier,
                                            protocol_rows, real_band, real_fid_blocks, sprite_fid)
from diffusion_utilities.plotting import animate, make_grid, plot_fid_against_calls, show_gif
from diffusion_utilities.weights import card_path, read_card_file

device = pick_device("auto")
print(f"running on {device.type}")
teacher, schedule, _ = load_model_and_schedule("../weights/sprites_v.safetensors", device)
student, _, _ = load_model_and_schedule("../weights/sprites_distilled.safetensors", device)
one_step, _, _ = load_model_and_schedule("../weights/sprites_distilled_1step.safetensors", device)
# the cards beside the weights: the recipe, and the protocol's measured rows (docs/evaluation.md)
teacher_card, student_card, one_step_card = (read_card_file(card_path(f"../weights/{name}.safetensors"))
                                             for name in ("sprites_v", "sprites_distilled", "sprites_distilled_1step"))
print(f"teacher: lesson 8's v-model ({schedule.name} schedule, T = {schedule.T}, zero terminal SNR, predicts "
      f"{schedule.prediction})")
for who, card in (("student", student_card), ("one-step student", one_step_card)):
    print(f"{who}: {card['distillation']['method']}, sampled with {card['sampler']['sampler']} in "
          f"{card['sampler']['steps']} step{'s' * (card['sampler']['steps'] > 1)}")
classifier = load_classifier("../weights/sprite_classifier.safetensors")
reference = classifier_features(classifier, sprites_to_tensor(procedural_dataset(2000, REFERENCE_SEED).sprites))"""),
(MD, r"""## Why a few steps fail: DDIM draws averages

Run lesson 7's deterministic DDIM with the teacher in 1, 2, 4 and 16 steps, from the same noise. At
every step the network predicts the clean sprite x̂₀, and DDIM moves x towards it. From pure noise the
best guess the network can make in the squared-error sense is the **average** of every sprite that
could have become this noise: the mean of a blob of possibilities. One step lands right on that
average, a blur; each further step sees a less noisy x, so the blob shrinks and the average
sharpens into one sprite."""),
(CODE, r"""n_show = 10
context = F.one_hot(torch.arange(n_show) % 5, 5).float().to(device)
x_T = torch.randn(n_show, 3, 16, 16, generator=torch.Generator().manual_seed(3)).to(device)
few_steps = (1, 2, 4, 16)
rows = [sample(teacher, schedule, sampler="ddim", steps=k, context=context, x_T=x_T).x for k in few_steps]
plt.figure(figsize=(8, 3.6))
plt.imshow(make_grid(torch.cat(rows), nrow=n_show, scale=3)); plt.axis("off")
plt.yticks([]); plt.title("the teacher's DDIM from the same noise; rows: " + ", ".join(f"{k} step{'s' * (k > 1)}"
                                                                                  for k in few_steps), fontsize=9)
plt.tight_layout(); plt.show()"""),
(MD, r"""The course's measuring stick says the same in numbers (docs/evaluation.md: sprite-FID over 1,000
sprites against held-out real ones, three sampling seeds, beside the band of real-sprite draws at that
n). These rows take minutes, so the lesson reads them from the teacher's card:"""),
(CODE, r"""teacher_rows = protocol_rows(teacher_card)
centre, low, high = real_band(teacher_card)
n_protocol = teacher_card["protocol"]["n"]
print(f"sprite-FID at n = {n_protocol:,} (mean over seeds, and their range); real sprites: {low:.1f} to {high:.1f}")
for name in ("ddim-1", "ddim-2", "ddim-4", "ddim-8", "ddim-16", "dpm-solver++-10"):
    r = teacher_rows[name]
    print(f"  teacher {name:16s} {r.calls:3d} call{'s' * (r.calls > 1)}: {r.fid:7.1f} ({r.fid_low:.1f} to {r.fid_high:.1f}), "
          f"class accuracy {r.class_accuracy:.3f}")"""),
(MD, r"""## The student's target: two teacher steps in one

Take the student's sampling grid of N steps, T = t₀ > t₁ > … > t_N = 0 (`schedule.grid(N)`), and the
teacher's grid of 2N steps, which holds every tᵢ and one point between each pair. Write α = √ᾱ and
σ = √(1 − ᾱ), so that x_t = α_t·x₀ + σ_t·ε. For one training example (Salimans & Ho, Algorithm 2):

1. take a real sprite x₀, a step i, t = tᵢ, and x_t = α_t·x₀ + σ_t·ε (the usual noising);
2. run the **teacher's** two DDIM steps: x_t → x_mid → x_prev (t → t_mid → t_prev = tᵢ₊₁);
3. find the clean image x̃ that makes **one** DDIM step from x_t land on x_prev. A DDIM step from t to
   t_prev is x_prev = α_p·x̂₀ + σ_p·ε̂ with ε̂ = (x_t − α_t·x̂₀)/σ_t, which is linear in x̂₀, so

   x̃ = (x_prev − (σ_p/σ_t)·x_t) / (α_p − (σ_p/σ_t)·α_t);

4. the student predicts v, so turn x̃ into the v that gives it: x̂₀ = α_t·x_t − σ_t·v, so
   ṽ = (α_t·x_t − x̃)/σ_t; and train the student on ‖v_θ(x_t, t) − ṽ‖².

The denominator in 3 never vanishes: ᾱ falls with t, so α_p/σ_p > α_t/σ_t. The loss in v is the
paper's loss on x̃ weighted by SNR + 1, one of the two weightings they recommend (§4). On a
zero-terminal-SNR schedule the student's first step starts from α_t = 0, pure noise, with no leak (lesson 8).

### Exercise: the target

Write `my_distillation_target(teacher, x_t, t, t_mid, t_prev, c)`, for integer times. You have
`schedule.x0_eps(x, v, t)` (lesson 8: x̂₀ and ε̂ from the network's v) and `schedule.ab_t[t]` (ᾱ);
the network's time input is `t / schedule.T`."""),
(CODE, r"""@torch.no_grad()
def my_distillation_target(teacher, x_t, t, t_mid, t_prev, c):
    # your code here: two DDIM steps with the teacher, then x̃ (step 3) and ṽ (step 4); return ṽ
    raise NotImplementedError"""),
(CODE, r"""# solution (folded)
@torch.no_grad()
def solution_distillation_target(teacher, x_t, t, t_mid, t_prev, c):
    def ddim(x, s, s_prev):                                   # lesson 7's deterministic step, on a v-model
        x0, eps = schedule.x0_eps(x, teacher(x, torch.tensor([s / schedule.T]), c), s)
        return schedule.ab_t[s_prev].sqrt() * x0 + (1 - schedule.ab_t[s_prev]).sqrt() * eps

    x_prev = ddim(ddim(x_t, t, t_mid), t_mid, t_prev)         # 2. the teacher's two steps
    a, s = schedule.ab_t[t].sqrt(), (1 - schedule.ab_t[t]).sqrt()
    a_p, s_p = schedule.ab_t[t_prev].sqrt(), (1 - schedule.ab_t[t_prev]).sqrt()
    x_tilde = (x_prev - s_p / s * x_t) / (a_p - s_p / s * a)  # 3. one step from x_t lands on x_prev
    return (a * x_t - x_tilde) / s                            # 4. the v that predicts x̃"""),
(CODE, r"""from diffusion_utilities.exercises import check_distillation_target, check_exercise

check_exercise(my_distillation_target, solution_distillation_target,
               lambda fn: check_distillation_target(fn, teacher.cpu(), schedule),
               "matches the library's distillation_target at every step of 1-, 2- and 4-step students")
teacher = teacher.to(device)"""),
(MD, r"""The library's version (`diffusion_utilities/distillation.py`) is the same arithmetic with one time
per sprite, and `train --teacher WEIGHTS --distill-steps N` trains a student with it: the same
training loop, EMA, checkpoints and `--resume` as every other run, started from the teacher's weights.

## A live round

The shipped student took four rounds, each about a quarter of an hour on a 2-core CPU. Here is one
small round you can watch: a student that samples in **2** steps learns from the teacher's **4**,
starting, as every student does, as a copy of its teacher. It takes 120 steps on batches of 64
sprites; the cell prints how long that took on your machine."""),
(CODE, r"""from diffusion_utilities.distillation import distillation_target, student_times

data = procedural_dataset(3000, seed=1)
x_all, c_all = sprites_to_tensor(data.sprites).to(device), torch.from_numpy(data.labels).float().to(device)
live = copy.deepcopy(teacher).train()                                   # the student starts as its teacher
optimizer = torch.optim.Adam(live.parameters(), lr=2e-4)
gen = torch.Generator().manual_seed(0)
N, n_steps, batch, losses = 2, 120, 64, []
start = time.perf_counter()
for step in tqdm(range(n_steps), desc="distilling"):
    idx = torch.randint(0, len(x_all), (batch,), generator=gen).to(device)
    keep = (torch.rand(batch, generator=gen) >= 0.1).to(device)[:, None]  # 10% without a context, for guidance
    x0, c = x_all[idx], c_all[idx] * keep
    i = torch.randint(0, N, (batch,), generator=gen).to(device)         # 1. a step of the student's grid,
    t, t_mid, t_prev = student_times(schedule, N, i)                    #    its times and the teacher's midpoint
    x_t = schedule.add_noise(x0, t, torch.randn(x0.shape, generator=gen).to(device))
    target = distillation_target(teacher, schedule, x_t, t, t_mid, t_prev, c)  # 2-4. ṽ, as in the exercise
    loss = F.mse_loss(live(x_t, t / schedule.T, c), target)
    optimizer.zero_grad(); loss.backward(); optimizer.step()
    losses.append(loss.item())
print(f"{n_steps} steps in {time.perf_counter() - start:.0f} s on {device.type}")""", IGNORE),
(MD, r"""Did the round teach the student anything? Same noise, same classes: the teacher in 2 and 4 steps, and
the live student in 2. And a rough look at sprite-FID over 200 sprites (not the protocol's 1,000: a
few seconds instead of minutes), printed with the band of 200-sprite real draws, the lowest any
sampler can hope for at this n."""),
(CODE, r"""live.eval()
fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 3), gridspec_kw={"width_ratios": [1, 2]})
ax0.plot(losses, alpha=0.4); ax0.plot(np.arange(9, n_steps), np.convolve(losses, np.ones(10) / 10, "valid"))
ax0.set_xlabel("step"); ax0.set_ylabel("‖v − ṽ‖²"); ax0.set_title("the live round's loss", fontsize=9)
shown = [sample(teacher, schedule, sampler="ddim", steps=2, context=context, x_T=x_T).x,
         sample(teacher, schedule, sampler="ddim", steps=4, context=context, x_T=x_T).x,
         sample(live, schedule, sampler="ddim", steps=2, context=context, x_T=x_T).x]
ax1.imshow(make_grid(torch.cat(shown), nrow=n_show, scale=3)); ax1.axis("off")
ax1.set_title("rows: teacher in 2 steps, teacher in 4, the live student in 2", fontsize=9)
plt.tight_layout(); plt.show()

n_rough = 200
rough_context = F.one_hot(torch.arange(n_rough) % 5, 5).float().to(device)
band = real_fid_blocks(classifier, reference, n_rough, blocks=5)
print(f"rough look, n = {n_rough}: real sprites {band.min():.0f} to {band.max():.0f}")
for who, net, k in (("teacher", teacher, 2), ("teacher", teacher, 4), ("live student", live, 2)):
    x = sample(net, schedule, n_rough, sampler="ddim", steps=k, context=rough_context,
               generator=torch.Generator().manual_seed(0)).x
    print(f"  {who:12s} {k} steps: sprite-FID {sprite_fid(classifier, x.clamp(-1, 1).cpu(), reference):6.1f}")""", IGNORE),
(MD, r"""The loss falls over the first few dozen steps and then levels off, and it shows: on this run the
student's 2 steps scored 162.8 where the teacher's own 2 steps score 354.0 (and its 4 steps 105.5), on
a rough look where real draws of 200 span 25 to 65 (your run prints its own figures above; training
rounds differently on other machines). Its bottom row is sharper than the top row, though not yet the
teacher's 4 steps: two minutes of a round are not a round.

## The shipped students

`tools/distill.sh` ran four rounds from lesson 8's v-model, each round's student the next round's
teacher: 16 → 8 → 4 → 2 → 1 steps (`train --teacher ... --distill-steps N` four times). Two of its
students are shipped: the 2-step student of round 3 (`weights/sprites_distilled.safetensors`, "the
student" below) and the 1-step student of round 4 (`weights/sprites_distilled_1step.safetensors`).
The last card keeps every round:"""),
(CODE, r"""print(one_step_card["distillation"]["method"])
for r in one_step_card["distillation"]["rounds"]:
    print(f"  round {r['teacher_steps']:2d} → {r['student_steps']} step{'s' * (r['student_steps'] > 1)}: {r['steps']:,} training steps, "
          f"{r['images_seen']:,} sprites, {r['wall_time_s'] / 60:.0f} min on {r['hardware']}")"""),
(MD, r"""Now the same noise through the teacher's DDIM and the students', at 1, 2, 4 and 8 calls, and the
denoising itself: the student's two steps beside the teacher's 16."""),
(CODE, r"""calls = (1, 2, 4, 8)
fig, axes = plt.subplots(1, 3, figsize=(15, 3.4))
for ax, (who, net) in zip(axes, (("teacher", teacher), ("student", student), ("one-step student", one_step))):
    grid = torch.cat([sample(net, schedule, sampler="ddim", steps=k, context=context, x_T=x_T).x for k in calls])
    ax.imshow(make_grid(grid, nrow=n_show, scale=3)); ax.axis("off")
    ax.set_title(f"{who} (DDIM); rows: " + ", ".join(f"{k} call{'s' * (k > 1)}" for k in calls), fontsize=9)
plt.tight_layout(); plt.show()
slow = sample(teacher, schedule, sampler="ddim", steps=16, context=context[:8], x_T=x_T[:8], save_every=1)
fast = sample(student, schedule, sampler="ddim", steps=2, context=context[:8], x_T=x_T[:8], save_every=1)
held = fast.frames[[0] + [k for k in (1, 2) for _ in range(8)]]  # each of the student's frames 8 times
show_gif(animate([slow.frames, held], slow.frame_t, nrow=4, scale=4,
                 titles=["teacher, 16 steps", "student, 2 steps (each held 8 frames)"]),
         "outputs/10_teacher_student.gif", fps=4)"""),
(MD, r"""## Quality and time against calls, all four models

The protocol's rows from the shipped models' cards, on one plot: the course's ε-model (lesson 7),
the v-model (8), the flow model (9) and the v-model's two students. Each point is the mean over the sampling seeds
drawn, with their range, against the band of real-sprite draws at the same n."""),
(CODE, r"""cards = {"course (ε)": read_card_file(card_path("../weights/sprites_ddpm.safetensors")),
         "v-model": teacher_card,
         "flow": read_card_file(card_path("../weights/sprites_flow.safetensors")),
         "student": student_card, "one-step student": one_step_card}
curves = {}
for who, card in cards.items():
    for name, r in protocol_rows(card).items():
        label = f"{who}: {r.sampler}" + (" η=1" if r.eta else "")
        curves.setdefault(label, []).append((r.calls, r.fid, r.fid_low, r.fid_high))
fig, ax = plt.subplots(figsize=(8.5, 4.5))
plot_fid_against_calls(ax, curves, (centre, low, high), n_protocol)
ax.set_yscale("log"); ax.legend(fontsize=7, ncol=2); plt.tight_layout(); plt.show()
best = protocol_rows(teacher_card)["dpm-solver++-10"]
print(f"teacher, DPM-Solver++ in 10 calls: {best.fid:.1f} ({best.fid_low:.1f} to {best.fid_high:.1f})")
for who, card in (("student", student_card), ("one-step student", one_step_card)):
    for name, r in protocol_rows(card).items():
        print(f"{who:16s} {name:7s} {r.calls} call{'s' * (r.calls > 1)}: {r.fid:6.1f} ({r.fid_low:.1f} to "
              f"{r.fid_high:.1f}), {r.fid / best.fid:4.1f}× the teacher's best; class accuracy {r.class_accuracy:.3f}")"""),
(MD, r"""Read the rows against the teacher's own DDIM above. Distillation did most of what it promises: at 2
calls the student scores 55.3 where the teacher's DDIM scores 356.6, at 4 calls 36.9 against 86.6,
and the one-step student 172.3 against 2273.9 in a single call, with class accuracy 0.96 or more at
2 and 4 calls. But it does not reach the teacher's best: DPM-Solver++ in 10 calls scores 23.5, so the
student at 4 calls is 1.6× that and at 2 calls 2.4×. Each round inherits its teacher's errors and
adds its own. Were our rounds simply too short (1,200 steps, about twenty minutes each on a 2-core CPU;
Salimans & Ho trained each round for far longer)? Longer training alone did not help here: a one-round
student trained several times longer stopped improving early, and neither DDIM's η nor training the
student on its own steps closed the gap, and nor did reflow, straightening lesson 9's flow model on
the v-model's own noise-to-sprite pairs (`weights/README.md` records these runs and their numbers).
What is left needs a GPU: wider students, the paper's far longer rounds, or consistency distillation
(Song et al. 2023). And a student is good at the steps it was trained
for, not at more: the 2-step student scores 96.6 at 8 calls, worse than at 4, because it was never
taught to take small steps, only its two big ones (and, one round earlier, its teacher's four).

And time, measured here, side by side: 32 sprites from the course model's DDPM (500 calls, lesson 3)
and from the student in 4 and in 2 calls. On our 2-core CPU the student was 124× faster at 4 calls and
242× at 2 (the cell prints your machine's figures)."""),
(CODE, r"""course, course_schedule, _ = load_model_and_schedule("../weights/sprites_ddpm.safetensors", device)
c32 = F.one_hot(torch.arange(32) % 5, 5).float().to(device)
timings = {}
for who, net, sch, sampler, k in (("course model, DDPM-500", course, course_schedule, "ddpm", 500),
                                  ("student, DDIM-4", student, schedule, "ddim", 4),
                                  ("student, DDIM-2", student, schedule, "ddim", 2)):
    sample(net, sch, 32, sampler=sampler, steps=min(k, 4), context=c32)  # a warm-up
    start = time.perf_counter()
    sample(net, sch, 32, sampler=sampler, steps=k, context=c32, generator=torch.Generator().manual_seed(0))
    timings[who] = time.perf_counter() - start
    print(f"{who:24s} {timings[who]:8.3f} s")
for k in (4, 2):
    print(f"the student at {k} calls is {timings['course model, DDPM-500'] / timings[f'student, DDIM-{k}']:.0f}× faster here")""",
 IGNORE),
(MD, r"""## What distillation costs: variety

A student is trained to land where its teacher's steps land, and a smaller step budget averages
more: does it still draw varied sprites? Measure it: for each class, the mean distance between pairs
of sprites drawn for that class (RMS over pixels, in [0, 1] units), for real sprites, the teacher's
DPM-Solver++ in 10 calls, the student at 2 and 4 calls and the one-step student. A model that draws the same sprite
every time would score 0."""),
(CODE, r"""def spread(x, labels):
    # mean RMS distance between pairs of sprites of the same class, in [0, 1] pixel units
    x01 = (x.clamp(-1, 1).cpu() + 1) / 2
    per_class = []
    for k in range(5):
        xs = x01[labels == k].flatten(1)
        d = torch.cdist(xs, xs) / xs.shape[1] ** 0.5
        per_class.append(d[~torch.eye(len(xs), dtype=bool)].mean().item())
    return np.array(per_class)

n_var = 250
labels = torch.arange(n_var) % 5
var_context = F.one_hot(labels, 5).float().to(device)
real = procedural_dataset(n_var, seed=7)
measured = {"real sprites": spread(sprites_to_tensor(real.sprites), torch.from_numpy(real.labels).argmax(1))}
runs = [("teacher, DPM-Solver++ 10", teacher, "dpm-solver++", 10), ("student, 2 calls", student, "ddim", 2),
        ("student, 4 calls", student, "ddim", 4), ("one-step student, 1 call", one_step, "ddim", 1)]
for who, net, sampler, k in runs:
    x = sample(net, schedule, n_var, sampler=sampler, steps=k, context=var_context,
               generator=torch.Generator().manual_seed(0)).x
    measured[who] = spread(x, labels)
print(f"{'':26s}" + "".join(f"{name[:9]:>10s}" for name in CLASS_NAMES) + "      mean")
for who, s in measured.items():
    print(f"{who:26s}" + "".join(f"{v:10.3f}" for v in s) + f"{s.mean():10.3f}")""", IGNORE),
(MD, r"""Real sprites of one class lie 0.412 apart on average, the teacher's 0.391. The one-step student's lie
0.316 apart, about a quarter less: one jump from noise to sprite averages over more of what the noise
could have become, so its sprites are more alike (and blander, as the grid above shows). The 2-step
student at its own 2 calls keeps more (0.360). At 4 calls it scores 0.429, *above* real sprites: not
more variety, but the speckles the grids show, which add distance between any two sprites. A pixel
distance reads noise as variety; that is why it is read beside FID and the pictures, never alone.

## Guidance on a student

Classifier-free guidance (lesson 6) mixes the model's predictions with and without the class. The
student learnt both (10% of its training contexts were dropped, as the teacher saw them), so guidance
runs unchanged; but the student was trained to match the *unguided* teacher, so nothing promises that
a guided student matches a guided teacher. Measured, as a rough look on 200 sprites:"""),
(CODE, r"""print(f"rough look, n = {n_rough}: real sprites {band.min():.0f} to {band.max():.0f}")
for w in (0.0, 1.0, 3.0):
    for who, net, sampler, k in (("teacher, DPM-Solver++ 10", teacher, "dpm-solver++", 10),
                                 ("student, 2 calls", student, "ddim", 2)):
        x = sample(net, schedule, n_rough, sampler=sampler, steps=k, context=rough_context, guidance=w,
                   generator=torch.Generator().manual_seed(0)).x.clamp(-1, 1).cpu()
        print(f"  w = {w:g}  {who:26s} sprite-FID {sprite_fid(classifier, x, reference):6.1f}, "
              f"class accuracy {class_accuracy(classifier, x, torch.arange(n_rough) % 5):.3f}")""", IGNORE),
(MD, r"""Guidance does to the student what it does to the teacher, and more: at w = 1 the student's class
accuracy rises from 0.950 to 0.975 and its sprite-FID from 70.2 to 137.7 (the teacher: 0.985 to
0.995, 47.2 to 95.8); at w = 3 the student scores 584.7, almost twice the teacher's 318.8. A student
copies the unguided teacher's trajectories, and guidance pushes it off them. Guided distillation
(Meng et al. 2023, "On Distillation of Guided Diffusion Models") trains the student with w as an extra
input to match the *guided* teacher, so that guidance costs no extra call; it needs a first round that
distils the guided teacher for a range of w, and is not done here.

## What to take away

- With few steps a deterministic sampler draws the average of everything the noise could become: a
  blur at one step, sharpening with each step.
- Progressive distillation trains a student to take in one step what its teacher takes in two, using
  only the teacher's DDIM steps and the ordinary training loop; each round halves the steps.
- On our budget (four rounds of 1,200 steps on a CPU) the students draw sprites in 1 to 4 calls that
  their teacher cannot draw in as few, a hundred times and more faster than DDPM-500, but do not reach
  the teacher's 10-call quality, lose some variety, and are good only at the steps they were trained for.
- Measured against the course's protocol: the gap to the teacher is read off the cards, not a picture.

**Next:** editing sprites with these models: inpainting, SDEdit and DDIM inversion
(`python -m diffusion_utilities edit`, and lesson 11 when it lands)."""),
]

if __name__ == "__main__":
    build(CELLS, Path(__file__).resolve().parent.parent / "notebooks" / "10_distillation.ipynb", "lesson10")
