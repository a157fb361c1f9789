"""The playground (notebooks/00_playground.ipynb) without a browser: its controls redraw, its grid inpaints.
tests/test_browser.py drives the same widgets in JupyterLab."""

from pathlib import Path

import pytest
import torch

from diffusion_utilities.editing import region_mask
from diffusion_utilities.playground import MODELS, Playground, Settings

ROOT = Path(__file__).resolve().parents[1]


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
