"""Writes notebooks/00_playground.ipynb from the cells below (outputs empty; run it with
tools/run_notebooks.py). Kept so that the notebook's source reads as plain Python in review."""

from pathlib import Path

from lesson_builder import CODE, IGNORE, MD, build

CELLS = [
(MD, r"""# 00 · Playground: draw sprites with every model of the course

Open this first. Nothing to read yet: move the sliders and watch the sprites change. Each control is
one idea the lessons teach, and the lessons say how it works.

| control | what it does | lesson |
|---|---|---|
| **model** | which trained network draws: the course's, the fixed-schedule v-model, the flow model, or the distilled student that draws in 2 calls | 1–7, 8, 9, 10 |
| **hero … side-facing** | the context vector: how much of each class to ask for; several at once mix them | 6 |
| **guidance** | classifier-free guidance: push away from the unconditioned drawing (0 is off; each step then costs two calls) | 6 |
| **steps** | how many denoising steps the sampler takes (more is slower; past a point not better) | 3, 7 |
| **seed** | which starting noise: the same seed starts every model from the same noise | 3 |

The **Edit** tab picks one of the sprites and shows it on a 16×16 grid. Click cells to paint the
pixels to redraw (or press a half), then **inpaint**: the model redraws only the painted pixels, so
that they fit the ones you kept (lesson 11)."""),
(CODE, r"""from diffusion_utilities.playground import MODELS, Playground, redraws_per_second

playground = Playground("../weights")
playground.widget"""),
(MD, r"""How live is it? The cell below times a redraw of the 8 sprites for each model at its default steps,
on this machine (every number is measured now, so yours will differ from ours). The distilled student,
with the fewest calls, is the one to pick on a slow laptop."""),
(CODE, r"""for name in MODELS:
    choice = playground.choices[name]
    print(f"{name:31s} {choice.sampler:12s} {choice.steps:2d} steps: {redraws_per_second(playground, name):5.1f} redraws a second")""",
 IGNORE),
(MD, r"""Things to try:

- Put **food** and **hero** both at 1: lesson 6 found that a mix mostly picks one class per sprite
  rather than blending them. Does the student agree with the v-model?
- Set **steps** to 1 on the v-model, then on the student: lesson 10 explains why one model draws a blur
  and the other a sprite.
- Raise **guidance** to 3 or more: the sprites get bolder, then garish (lesson 6).
- In **Edit**, press *left half*, then **inpaint** a few times with different seeds and classes.

Next: [lesson 1](01_noise_schedule.ipynb), where the noise comes from."""),
]

if __name__ == "__main__":
    build(CELLS, Path(__file__).resolve().parents[1] / "notebooks" / "00_playground.ipynb", "playground")
