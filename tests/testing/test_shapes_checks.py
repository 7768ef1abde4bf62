"""The semantic pixel checks, on images whose ground truth is known (rendered dataset samples)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from diffusiond.engine.training.shapes_dataset import PALETTE, ShapeLabel, render
from diffusiond.testing import shapes_checks as checks


def _image(color: str = "red", background: str = "blue", shape: str = "circle", size: str = "large",
           position: str = "center", pixels: int = 64) -> Image.Image:
    return render(ShapeLabel(color, background, shape, size, position), pixels)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", list(PALETTE))
def test_nearest_color_of_each_palette_entry_and_of_a_slightly_off_copy(name: str) -> None:
    r, g, b = PALETTE[name]
    assert checks.nearest_color((r, g, b)) == name
    assert checks.nearest_color((min(255, r + 20), max(0, g - 20), b)) == name


def test_background_and_shape_colour() -> None:
    image = _image("yellow", "purple")
    assert checks.background_color(image) == "purple"
    assert checks.shape_color(image) == "yellow"
    assert checks.color_distance(checks.background_rgb(image), "purple") < 5


def test_a_plain_image_has_no_shape() -> None:
    plain = Image.new("RGB", (64, 64), PALETTE["green"])
    reading = checks.read_image(plain)
    assert reading.background == "green"
    assert reading.color is None and reading.shape is None and reading.position is None
    assert reading.area == 0.0


@pytest.mark.parametrize(("shape", "low", "high"), [("square", 0.9, 1.01), ("circle", 0.7, 0.86),
                                                    ("triangle", 0.4, 0.62)])
def test_fill_ratio_separates_the_shapes(shape: str, low: float, high: float) -> None:
    mask = checks.foreground_mask(_image(shape=shape))
    assert low < checks.fill_ratio(mask) < high
    assert checks.shape_kind(mask) == shape


@pytest.mark.parametrize("position", ["left", "right", "top", "bottom", "center"])
@pytest.mark.parametrize("size", ["small", "large"])
def test_position_and_size(position: str, size: str) -> None:
    image = _image(shape="triangle", size=size, position=position)
    assert checks.shape_position(image) == position
    assert checks.shape_size(image) == size


def test_checks_work_at_larger_sizes() -> None:
    reading = checks.read_image(_image("orange", "cyan", "square", "small", "right", pixels=128))
    assert (reading.color, reading.background, reading.shape, reading.position, reading.size) == (
        "orange", "cyan", "square", "right", "small")


def test_largest_component_drops_specks() -> None:
    mask = np.zeros((16, 16), dtype=bool)
    mask[2:8, 2:8] = True
    mask[12, 12] = True
    kept = checks.largest_component(mask)
    assert kept.sum() == 36 and not kept[12, 12]


def test_mean_abs_diff_with_and_without_mask() -> None:
    a = np.zeros((8, 8, 3), dtype=np.uint8)
    b = a.copy()
    b[:4] = 100
    assert checks.mean_abs_diff(a, a) == 0.0
    assert checks.mean_abs_diff(a, b) == pytest.approx(50.0)
    top = checks.box_mask(8, 8, (0, 0, 8, 4))
    assert checks.mean_abs_diff(a, b, top) == pytest.approx(100.0)
    assert checks.mean_abs_diff(a, b, ~top) == 0.0
    with pytest.raises(ValueError):
        checks.mean_abs_diff(a, np.zeros((4, 4, 3), dtype=np.uint8))


def test_region_color_reads_inside_a_mask() -> None:
    image = _image("white", "black", "square", "large", "center")
    centre = checks.box_mask(64, 64, (28, 28, 36, 36))
    corner = checks.box_mask(64, 64, (0, 0, 6, 6))
    assert checks.region_color(image, centre) == "white"
    assert checks.region_color(image, corner) == "black"


def test_templates_match_their_own_kind_best() -> None:
    for kind in ("circle", "square", "triangle"):
        scores = checks.template_scores(checks.shape_template(kind, 20, 20))
        assert max(scores, key=lambda k: scores[k]) == kind and scores[kind] > 0.9
