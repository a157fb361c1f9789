"""The playground (notebooks/00_playground.ipynb) without a browser: its controls redraw, its grid inpaints.
tests/test_browser.py drives the same widgets in JupyterLab."""

from pathlib import Path

import numpy as np
import pytest
import torch

from diffusion_utilities.editing import region_mask
from diffusion_utilities import BadInput
from diffusion_utilities.playground import MODELS, Playground, Settings, redraws_per_second

ROOT = Path(__file__).resolve().parents[1]
NAME = "distilled student (lesson 10)"


@pytest.fixture(scope="module")
def playground():
    fast = {name: MODELS[name] for name in ("distilled student (lesson 10)", "v-model (lesson 8)")}
    return Playground(ROOT / "weights", n=4, models=fast)


def test_every_control_redraws_the_sprites(playground):
    for control, value in [(playground.mix[2], 1.0), (playground.guidance, 2.0), (playground.seed, 7),
                           (playground.steps, 4)]:
        before, sprites = playground.picture.value, playground.sprites.clone()
        control.value = value
        assert playground.picture.value != before and not torch.equal(playground.sprites, sprites), control.description
    assert "4 sprites in" in playground.readout.value and "8 network calls (ddim, 4 steps)" in playground.readout.value


def test_a_new_model_starts_at_its_own_steps_and_the_same_seed_is_the_same_noise(playground):
    playground.model.value = "v-model (lesson 8)"
    assert playground.steps.value == 10 and "dpm-solver++" in playground.readout.value
    s = playground.settings()
    torch.testing.assert_close(playground.draw(s), playground.draw(s))


def test_painted_cells_are_redrawn_and_the_rest_kept(playground):
    playground.model.value = "distilled student (lesson 10)"
    playground.set_mask(region_mask("left"))
    assert playground.cells[3][2].value and not playground.cells[3][12].value
    playground.cells[0][15].value = True  # a click on one more cell
    mask = playground.mask()
    assert mask[0, 0, 0, 15] == 0 and mask[0, 0, 5, 12] == 1
    before = playground.result.value
    filled = playground.run_inpaint()
    sprite = playground.sprites[playground.which.value][None]
    assert filled.shape == (4, 3, 16, 16) and playground.result.value != before
    torch.testing.assert_close(filled * mask, sprite.expand_as(filled) * mask)
    assert (filled * (1 - mask) - sprite * (1 - mask)).abs().max() > 0.1  # the painted pixels were redrawn


def test_the_grid_shows_the_chosen_sprite(playground):
    playground.set_mask(torch.ones(1, 1, 16, 16))
    playground.which.value = 1
    colours = {cell.style.button_color for row in playground.cells for cell in row}
    assert len(colours) > 4  # the sprite's pixels, not one colour
    settings = Settings(playground.model.value, (1, 0, 0, 0, 0))
    assert playground.draw(settings).shape == (4, 3, 16, 16)


@pytest.mark.parametrize("call, says", [
    (lambda pg: pg.draw(Settings(NAME, (1e30, 0, 0, 0, 0), steps=2)), "context has a weight of 1e\\+30"),
    (lambda pg: pg.draw(Settings(NAME, (1, 0, 0, 0, 0), steps=2, seed=1.5)), "seed must be a whole number"),
    (lambda pg: pg.draw(Settings(NAME, (1, 0, 0, 0, 0), steps=2, seed=float("nan"))), "seed must be"),
    (lambda pg: pg.draw(Settings("nope", (1, 0, 0, 0, 0), steps=2)), "unknown model 'nope'"),
    (lambda pg: pg.inpaint(Settings(NAME, (1, 0, 0, 0, 0), steps=2), torch.zeros(1, 3, 16, 16), torch.ones(1, 1, 16, 16),
                           variants=-1), "variants must be"),
    (lambda pg: pg.inpaint(Settings(NAME, (1, 0, 0, 0, 0), steps=2), torch.zeros(2, 3, 16, 16), torch.ones(1, 1, 16, 16)),
     "inpaint fills one sprite"),
    (lambda pg: redraws_per_second(pg, NAME, repeats=-3), "repeats must be"),
])
def test_the_playground_refuses_bad_settings_in_one_line(playground, call, says):
    # issue 33's re-walk: NaN sprites, KeyError, TypeError, RuntimeError, a negative rate, a context blamed for a sprite
    with pytest.raises(BadInput, match=says):
        call(playground)


def test_the_playground_takes_a_numpy_seed(playground):
    a = playground.draw(Settings(NAME, (1, 0, 0, 0, 0), steps=2, seed=np.int64(3)))
    assert torch.equal(a, playground.draw(Settings(NAME, (1, 0, 0, 0, 0), steps=2, seed=3)))


@pytest.mark.parametrize("kwargs, says", [({"n": 0}, "n \\(sprites a drawing\\) must be"), ({"n": 1.5}, "n \\(sprites"),
                                          ({"models": {}}, "at least one model")])
def test_a_playground_of_no_sprites_or_no_models_is_one_line(kwargs, says):
    with pytest.raises(BadInput, match=says):
        Playground(ROOT / "weights", **kwargs)
