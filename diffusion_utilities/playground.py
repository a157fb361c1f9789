"""The playground (notebooks/00_playground.ipynb): the shipped models behind sliders, and a sprite to paint on.

Not one of the course's algorithms: widgets around ``sample`` (lessons 3 to 10) and ``editing.inpaint``
(lesson 11), so that a workshop's first five minutes are spent drawing. ``Playground(weights)`` builds it,
``.widget`` is what a notebook shows, and ``draw``/``inpaint`` are what the widgets call, usable without
them. ipywidgets only: the same controls run in JupyterLab, Notebook 7, VS Code and SageMaker.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from .checks import whole_number
from .data import CLASS_NAMES
from .editing import inpaint, region_mask
from .errors import BadInput
from .plotting import make_grid, to_uint8
from .sampling import network_calls, sample, sampling_policy
from .weights import load_model_and_schedule

__all__ = ["MODELS", "Playground", "Settings", "redraws_per_second"]


@dataclass(frozen=True)
class Choice:
    file: str  # in the weights folder
    sampler: str
    steps: int  # the default: the fewest steps of this sampler that the protocol ranks well (docs/evaluation.md)
    eta: float = 0.0


# The course model's best few-step sampler is DDIM with η = 1 (lesson 7); the others' are their cards' own.
MODELS = {
    "v-model (lesson 8)": Choice("sprites_v", "dpm-solver++", 10),
    "distilled student (lesson 10)": Choice("sprites_distilled", "ddim", 2),
    "flow model (lesson 9)": Choice("sprites_flow", "heun", 9),
    "course model (lessons 1-7)": Choice("sprites_ddpm", "ddim", 25, eta=1.0),
}


@dataclass(frozen=True)
class Settings:
    model: str
    mix: tuple[float, ...]  # one weight a class: lesson 6's context vector
    guidance: float = 0.0
    steps: int = 10
    seed: int = 0


def png(images: torch.Tensor, nrow: int, scale: int = 6) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(make_grid(images, nrow=nrow, scale=scale)).save(buffer, format="png")
    return buffer.getvalue()


class Playground:
    """``n`` sprites drawn by the chosen model; every control redraws them. The Edit tab inpaints one of them."""

    def __init__(self, weights: str | Path = "../weights", device: str | torch.device = "cpu", n: int = 8,
                 models: dict[str, Choice] | None = None):
        self.n, self.device = whole_number(n, "n (sprites a drawing)", 1, 64), torch.device(device)
        self.choices = _check_models(MODELS if models is None else models)
        self.models = {name: self._load(Path(weights) / f"{c.file}.safetensors") for name, c in self.choices.items()}
        self.sprites = None  # the last drawing, (n, 3, 16, 16) in [-1, 1]
        self.seconds = 0.0
        self._painting = False  # set_mask presses many cells: the grid is repainted once, after them
        self._build()

    def _load(self, path: Path):  # a flow model on the commands' time grid
        model, schedule, card = load_model_and_schedule(path, self.device)
        return model, sampling_policy(schedule, card)[2]

    # what the widgets call ------------------------------------------------------------------------------
    def _checked(self, s: Settings):
        """The model, schedule and choice these settings name, and their seed as an int: one BadInput line if not."""
        _check_model_name(s.model, self.choices)
        seed = whole_number(s.seed, "seed", 0, 2**63 - 1)
        return (*self.models[s.model], self.choices[s.model], seed)

    def draw(self, s: Settings) -> torch.Tensor:
        """The n sprites for these settings; the same seed starts every model from the same noise."""
        model, schedule, choice, seed = self._checked(s)
        context = torch.tensor([s.mix], dtype=torch.float32).repeat(self.n, 1).to(self.device)
        noise = torch.randn((self.n, 3, model.h, model.h), generator=torch.Generator().manual_seed(seed))
        return sample(model, schedule, sampler=choice.sampler, steps=s.steps, eta=choice.eta, context=context,
                      guidance=s.guidance, x_T=noise.to(self.device),
                      generator=torch.Generator().manual_seed(seed)).x.cpu()

    def inpaint(self, s: Settings, sprite: torch.Tensor, mask: torch.Tensor, variants: int = 4) -> torch.Tensor:
        """``variants`` fillings of the pixels where ``mask`` is 0 of one sprite (1, 3, H, W), under the mix."""
        model, schedule, choice, seed = self._checked(s)
        variants = whole_number(variants, "variants", 1, 64)
        _check_one_sprite(sprite, model.h)
        images = sprite.repeat(variants, 1, 1, 1).to(self.device)
        context = torch.tensor([s.mix], dtype=torch.float32).repeat(variants, 1).to(self.device)
        eta = 1.0 if choice.sampler == "ddim" and choice.steps > 4 else choice.eta  # noisy steps settle the seam
        return inpaint(model, schedule, images, mask.to(self.device), sampler=choice.sampler, steps=s.steps,
                       context=context, guidance=s.guidance, eta=eta,
                       generator=torch.Generator().manual_seed(seed)).x.cpu()

    def settings(self) -> Settings:
        return Settings(self.model.value, tuple(float(w.value) for w in self.mix), float(self.guidance.value),
                        int(self.steps.value), int(self.seed.value))

    def mask(self) -> torch.Tensor:
        """(1, 1, H, W): 1 where a pixel is kept, 0 where a cell of the grid was painted."""
        painted = torch.tensor([[cell.value for cell in row] for row in self.cells], dtype=torch.float32)
        return (1 - painted)[None, None]

    # the widgets ----------------------------------------------------------------------------------------
    def _build(self) -> None:
        import ipywidgets as w  # only the playground needs widgets: the package imports without them

        self.model = w.Dropdown(options=list(self.choices), description="model")
        # a redraw when a slider is released, not at every pixel it passes (a slow model would fall behind)
        quiet = dict(continuous_update=False)
        self.mix = [w.FloatSlider(value=1.0 if i == 0 else 0.0, min=0, max=1, step=0.1, description=name, **quiet)
                    for i, name in enumerate(CLASS_NAMES)]
        self.guidance = w.FloatSlider(value=0.0, min=0, max=5, step=0.5, description="guidance", **quiet)
        self.steps = w.IntSlider(value=10, min=1, max=50, description="steps", **quiet)
        self.seed = w.IntSlider(value=0, min=0, max=99, description="seed", **quiet)
        self.picture, self.readout = w.Image(format="png"), w.Label()
        for control in (*self.mix, self.guidance, self.steps, self.seed):
            control.observe(self.redraw, "value")
        self.model.observe(self._model_changed, "value")

        size = next(iter(self.models.values()))[0].h
        square = w.Layout(width="22px", height="22px", padding="0", margin="0")  # one layout for all the cells
        self.cells = [[w.ToggleButton(tooltip=f"row {r}, column {c}", layout=square) for c in range(size)]
                      for r in range(size)]
        for row in self.cells:
            for cell in row:
                cell.observe(self._cell_changed, "value")
        self.which = w.IntSlider(value=0, min=0, max=self.n - 1, description="sprite")
        self.which.observe(lambda _: self._paint_sprite(), "value")
        regions = [w.Button(description=f"{r} half" if r != "centre" else "centre")
                   for r in ("left", "right", "top", "bottom", "centre")]
        for button, region in zip(regions, ("left", "right", "top", "bottom", "centre")):
            button.on_click(lambda _, region=region: self.set_mask(region_mask(region, size)))
        clear = w.Button(description="clear")
        clear.on_click(lambda _: self.set_mask(torch.ones(1, 1, size, size)))
        self.go = w.Button(description="inpaint", button_style="primary")
        self.go.on_click(self.run_inpaint)
        self.result, self.edit_readout = w.Image(format="png"), w.Label("paint cells (click), then inpaint")
        grid = w.GridBox([cell for row in self.cells for cell in row],
                         layout=w.Layout(grid_template_columns=f"repeat({size}, 22px)", grid_gap="0px"))

        draw_tab = w.VBox([self.model, *self.mix, self.guidance, self.steps, self.seed, self.readout, self.picture])
        edit_tab = w.VBox([self.which, w.HBox([grid, w.VBox([*regions, clear, self.go])]), self.edit_readout,
                           self.result])
        self.widget = w.Tab(children=[draw_tab, edit_tab])
        for i, title in enumerate(("Draw", "Edit")):
            self.widget.set_title(i, title)
        self._model_changed()

    def _model_changed(self, _=None) -> None:
        choice = self.choices[self.model.value]
        with self.steps.hold_trait_notifications():
            self.steps.value = choice.steps
        self.redraw()

    def redraw(self, _=None) -> None:
        s = self.settings()
        start = time.perf_counter()
        self.sprites = self.draw(s)
        self.seconds = time.perf_counter() - start
        calls = network_calls(self.choices[s.model].sampler, s.steps) * (2 if s.guidance > 0 else 1)
        self.readout.value = (f"{self.n} sprites in {1000 * self.seconds:.0f} ms: {calls} network calls "
                              f"({self.choices[s.model].sampler}, {s.steps} steps)")
        self.picture.value = png(self.sprites, nrow=self.n // 2 if self.n > 4 else self.n)
        self._paint_sprite()

    def set_mask(self, mask: torch.Tensor) -> None:
        """Press the grid's cells where ``mask`` (1, 1, H, W) is 0, one redraw of the grid for all of them."""
        self._painting = True
        for r, row in enumerate(self.cells):
            for c, cell in enumerate(row):
                cell.value = bool(mask[0, 0, r, c] == 0)
        self._painting = False
        self._paint_sprite()

    def _cell_changed(self, change) -> None:
        if not self._painting:
            self._paint_sprite()

    def _paint_sprite(self) -> None:
        """The grid shows the chosen sprite, pixel by pixel; painted cells are shown as a grey checker."""
        pixels = to_uint8(self.sprites[self.which.value][None])[0]  # (H, W, 3)
        for r, row in enumerate(self.cells):
            for c, cell in enumerate(row):
                rgb = (96, 96, 96) if (r + c) % 2 else (160, 160, 160)
                cell.style.button_color = "#%02x%02x%02x" % (rgb if cell.value else tuple(pixels[r, c]))

    def run_inpaint(self, _=None) -> torch.Tensor:
        s, mask = self.settings(), self.mask()
        sprite = self.sprites[self.which.value][None]
        start = time.perf_counter()
        filled = self.inpaint(s, sprite, mask)
        seconds = time.perf_counter() - start
        shown = torch.cat([sprite, sprite * mask + (1 - mask) * 0.0, filled])  # the sprite, what is kept, fillings
        self.result.value = png(shown, nrow=len(shown))
        self.edit_readout.value = (f"the sprite, the kept pixels, then {len(filled)} fillings in "
                                   f"{1000 * seconds:.0f} ms")
        return filled


def _check_models(models) -> dict:
    if not (isinstance(models, dict) and models):
        raise BadInput("models must name at least one model: a dict of name -> Choice, such as playground.MODELS")
    return models


def _check_model_name(name, choices: dict) -> None:
    if name not in choices:
        raise BadInput(f"unknown model {name!r}; choose one of {', '.join(choices)}")


def _check_one_sprite(sprite, size: int) -> None:
    if not (torch.is_tensor(sprite) and tuple(sprite.shape) == (1, 3, size, size)):
        raise BadInput(f"inpaint fills one sprite: a (1, 3, {size}, {size}) tensor, got "
                       f"{tuple(sprite.shape) if torch.is_tensor(sprite) else type(sprite).__name__}")


def redraws_per_second(playground: Playground, model: str, repeats: int = 5, **settings) -> float:
    """How many redraws of the Draw tab one second holds for ``model`` at its default steps, measured here."""
    repeats = whole_number(repeats, "repeats", 1)
    _check_model_name(model, playground.choices)
    s = Settings(model, tuple(1.0 if i == 0 else 0.0 for i in range(len(CLASS_NAMES))),
                 steps=playground.choices[model].steps, **settings)
    playground.draw(s)  # warm up: the first call folds the network and allocates
    start = time.perf_counter()
    for _ in range(repeats):
        playground.draw(s)
    return repeats / (time.perf_counter() - start)
