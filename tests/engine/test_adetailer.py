"""The adetailer stage and its detectors: detect regions, repaint them, leave the rest alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from diffusiond.domain.errors import InvalidParams
from diffusiond.domain.models import ModelFormat, ModelKind, ModelRecord
from diffusiond.domain.params import Adetailer, AdetailerRegion, GenerateSpec, Img2Img, Txt2Img, WeightedPrompt
from diffusiond.engine.adetailer import region_masks
from diffusiond.engine.detectors import ConvHeatmapDetector, ShapesDetector, load_detector
from diffusiond.engine.runner import Engine
from tests.engine.conftest import Context, Resolver, diffusion

BG = (30, 60, 200)
CIRCLE = (8, 8, 28, 28)  # red, inclusive PIL box
SQUARE = (38, 36, 56, 54)  # green


def shapes_image() -> Image.Image:
    image = Image.new("RGB", (64, 64), BG)
    draw = ImageDraw.Draw(image)
    draw.ellipse(CIRCLE, fill=(220, 30, 30))
    draw.rectangle(SQUARE, fill=(40, 200, 60))
    return image


def near(box: tuple[int, int, int, int], expected: tuple[int, int, int, int], tol: int = 1) -> bool:
    exp = (expected[0], expected[1], expected[2] + 1, expected[3] + 1)  # PIL boxes are inclusive
    return all(abs(a - b) <= tol for a, b in zip(box, exp, strict=True))


def test_shapes_detector_finds_each_shape() -> None:
    found = ShapesDetector().detect(shapes_image())
    assert len(found) == 2
    boxes = sorted(d.box for d in found)
    assert near(boxes[0], CIRCLE) and near(boxes[1], SQUARE)
    assert all(0.2 < d.score <= 1.0 for d in found)
    assert ShapesDetector().detect(Image.new("RGB", (64, 64), BG)) == []


def test_region_masks_confidence_dilation_and_merge() -> None:
    found = ShapesDetector().detect(shapes_image())
    base = AdetailerRegion(detector="shapes", diffusion=diffusion(), dilation=0)
    assert len(region_masks(found, base)) == 2
    assert region_masks(found, AdetailerRegion("shapes", diffusion(), confidence=1.0)) == []
    (merged,) = region_masks(found, AdetailerRegion("shapes", diffusion(), dilation=0, mask_merge="merge"))
    area = int((np.asarray(merged) > 0).sum())
    assert area == sum(int((np.asarray(d.mask) > 0).sum()) for d in found)
    (inverted,) = region_masks(found, AdetailerRegion("shapes", diffusion(), dilation=0, mask_merge="merge_invert"))
    assert int((np.asarray(inverted) > 0).sum()) == 64 * 64 - area
    grown = region_masks(found, AdetailerRegion("shapes", diffusion(), dilation=3))
    assert all(g.getbbox()[2] - g.getbbox()[0] == d.box[2] - d.box[0] + 6  # type: ignore[index]
               for g, d in zip(grown, found, strict=True))


def red_detector_file(path: Path, *, in_channels: int = 3) -> Path:
    """A user's heat-map detector: one 1x1 conv that lights up on red pixels."""
    import torch
    from safetensors.torch import save_file

    weight = torch.zeros(1, in_channels, 1, 1)
    weight[0, :3, 0, 0] = torch.tensor([12.0, -6.0, -6.0])
    save_file({"layers.0.weight": weight, "layers.0.bias": torch.tensor([-3.0])}, str(path),
              metadata={"threshold": "0.5"})
    return path


def test_user_detector_weights_load_from_safetensors(tmp_path: Path) -> None:
    path = red_detector_file(tmp_path / "red.safetensors")
    resolver = Resolver()
    resolver.add(ModelRecord("red-det", ModelKind.DETECTOR, ModelFormat.SAFETENSORS, str(path), family="detector"))
    detector = load_detector("red-det", resolver)
    assert isinstance(detector, ConvHeatmapDetector)
    (only,) = detector.detect(shapes_image())
    assert near(only.box, CIRCLE) and only.score > 0.9
    with pytest.raises(InvalidParams):
        ConvHeatmapDetector.load(red_detector_file(tmp_path / "bad.safetensors", in_channels=4))


def region(prompt: str = "a yellow star", **kwargs: object) -> AdetailerRegion:
    d = diffusion(prompt=prompt, steps=3)
    defaults: dict[str, object] = {"dilation": 2, "mask_blur": 0, "strength": 0.9, "padding": 8}
    return AdetailerRegion(detector="shapes", diffusion=d, **{**defaults, **kwargs})  # type: ignore[arg-type]


def changed(a: Image.Image, b: Image.Image) -> np.ndarray:
    x = np.asarray(a.convert("RGB"), dtype=np.int16)
    y = np.asarray(b.convert("RGB"), dtype=np.int16)
    return np.abs(x - y).max(axis=-1)  # type: ignore[no-any-return]


def allowed_area(regions: list[tuple[int, int, int, int]], grow: int) -> np.ndarray:
    keep = np.zeros((64, 64), dtype=bool)
    for left, top, right, bottom in regions:
        keep[max(top - grow, 0): bottom + 1 + grow, max(left - grow, 0): right + 1 + grow] = True
    return keep


@pytest.mark.parametrize("only_masked", [True, False])
def test_adetailer_changes_detected_regions_only(engine: Engine, ctx: Context, only_masked: bool) -> None:
    init = ctx.put("shapes", shapes_image())
    keep_first = Img2Img(diffusion(), init=init, strength=0.0)  # the uploaded picture, as it is
    stage = Adetailer((region(only_masked=only_masked),))
    out = engine.run(GenerateSpec(stages=(keep_first, stage), seed=3), ctx)[0].image
    assert out.size == (64, 64)
    diff = changed(out, shapes_image())
    inside = allowed_area([CIRCLE, SQUARE], grow=2)
    assert int(diff[~inside].max()) <= 1, "pixels outside the detected regions changed"
    for left, top, right, bottom in (CIRCLE, SQUARE):
        assert float(diff[top:bottom, left:right].mean()) > 5, "a detected region was not repainted"
    assert ctx.progress and ctx.progress[-1][1] == pytest.approx(1.0)


def test_adetailer_leaves_an_image_without_detections_unchanged(engine: Engine, ctx: Context) -> None:
    blank = Image.new("RGB", (64, 64), BG)
    stage = Adetailer((region(),))
    out = engine.run(GenerateSpec(stages=(Img2Img(diffusion(), init=ctx.put("blank", blank), strength=0.0), stage),
                             seed=3), ctx)[0].image
    assert int(changed(out, blank).max()) == 0


SHAPES = Path(__file__).resolve().parents[2] / "src" / "diffusiond" / "bundled" / "shapes"


@pytest.mark.skipif(not (SHAPES / "model_index.json").is_file(), reason="the bundled shapes model is not built yet")
def test_adetailer_on_the_bundled_shapes_model(engine: Engine, ctx: Context, resolver: Resolver) -> None:
    resolver.add(ModelRecord("shapes", ModelKind.CHECKPOINT, ModelFormat.DIFFUSERS, str(SHAPES), family="shapes"))
    d = diffusion(model="shapes", prompt="a red circle on a blue background", steps=20)
    first = engine.run(GenerateSpec(stages=(Txt2Img(d),), seed=11), ctx)[0].image
    detections = ShapesDetector().detect(first)
    assert detections, "the shapes detector found nothing in a shapes picture"
    repaint = AdetailerRegion(detector="shapes", diffusion=d.__class__(**{**d.__dict__, "prompts": (
        WeightedPrompt("a green square"),)}), dilation=2, mask_blur=0, strength=0.9)
    out = engine.run(GenerateSpec(stages=(Txt2Img(d), Adetailer((repaint,))), seed=11), ctx)[0].image
    diff = changed(out, first)
    boxes = [(b.box[0], b.box[1], b.box[2] - 1, b.box[3] - 1) for b in detections if b.score >= repaint.confidence]
    assert int(diff[~allowed_area(boxes, grow=2)].max()) <= 1
