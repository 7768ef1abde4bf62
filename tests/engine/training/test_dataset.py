"""Training pictures: captions with the trigger word, resize and centre-crop, aspect buckets, batches."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from diffusiond.domain.errors import InvalidParams
from diffusiond.engine.training.dataset import (
    BatchPlan,
    aspect_buckets,
    build_examples,
    fingerprint,
    fit,
    folder_pictures,
    nearest_bucket,
)


def striped(width: int, height: int) -> Image.Image:
    """Left third red, middle green, right third blue."""
    image = Image.new("RGB", (width, height), (0, 200, 0))
    image.paste((200, 0, 0), (0, 0, width // 3, height))
    image.paste((0, 0, 200), (width - width // 3, 0, width, height))
    return image


def test_every_caption_gets_the_trigger_word_once() -> None:
    pictures = [(striped(64, 64), ""), (striped(64, 64), "a red circle"), (striped(64, 64), "sks a square")]
    examples = build_examples(pictures, "sks", 64)
    assert [e.caption for e in examples] == ["sks", "sks a red circle", "sks a square"]
    assert [e.plain_caption for e in examples] == ["", "a red circle", "a square"]


def test_pictures_are_resized_to_cover_and_centre_cropped() -> None:
    cropped, (top, left) = fit(striped(300, 100), (64, 64))
    assert cropped.size == (64, 64) and (top, left) == (0, 64)  # 192x64, the middle 64 columns
    assert cropped.getpixel((32, 32)) == (0, 200, 0)
    example, = build_examples([(striped(100, 300).convert("RGBA"), "")], "t", 64)
    assert example.image.mode == "RGB" and example.image.size == (64, 64)
    assert example.original_size == (300, 100) and example.crop_top_left == (64, 0)


def test_aspect_buckets_keep_the_area_and_group_pictures_by_shape() -> None:
    buckets = aspect_buckets(512, 64)
    assert buckets == [(384, 640), (448, 576), (512, 512), (576, 448), (640, 384)]
    assert all(w % 64 == 0 and h % 64 == 0 and w * h <= 512 * 512 for w, h in buckets)
    assert all(max(w / h, h / w) <= 2.0 for w, h in buckets)
    assert nearest_bucket((1600, 900), buckets) == (640, 384)
    examples = build_examples([(striped(1600, 900), ""), (striped(900, 1600), ""), (striped(500, 500), "")], "t",
                              512, buckets=True)
    assert [e.image.size for e in examples] == [(640, 384), (384, 640), (512, 512)]


def test_batches_are_a_function_of_seed_and_step_and_stay_in_one_bucket() -> None:
    pictures = [(striped(128, 64), "") for _ in range(5)] + [(striped(64, 64), "") for _ in range(7)]
    examples = build_examples(pictures, "t", 64, buckets=True, multiple=16)
    plan = BatchPlan.of(examples, 3, seed=1)
    batches = [plan.batch(step) for step in range(12)]
    assert batches[7] == BatchPlan.of(examples, 3, seed=1).batch(7)  # a fresh plan (a resumed run) agrees
    assert batches != [BatchPlan.of(examples, 3, seed=2).batch(step) for step in range(12)]
    for batch in batches:
        assert len(batch) == 3 and len({examples[i].bucket for i in batch}) == 1
    epoch = batches[: plan.batches_per_epoch]
    assert len({i for batch in epoch for i in batch}) == 3 * plan.batches_per_epoch  # no repeats in an epoch
    tiny = BatchPlan.of(examples[:2], 8, seed=1)
    assert sorted(tiny.batch(0)) == [0, 1]  # fewer pictures than a batch: all of them


def test_the_fingerprint_changes_with_pixels_or_captions() -> None:
    a = build_examples([(striped(64, 64), "x")], "t", 64)
    assert fingerprint(a) == fingerprint(build_examples([(striped(64, 64), "x")], "t", 64))
    assert fingerprint(a) != fingerprint(build_examples([(striped(64, 64), "y")], "t", 64))
    assert fingerprint(a) != fingerprint(build_examples([(striped(64, 64).rotate(90), "x")], "t", 64))


def test_a_folder_gives_its_pictures_with_captions_beside_them(tmp_path: Path) -> None:
    striped(64, 64).save(tmp_path / "b.png")
    striped(64, 64).save(tmp_path / "a.jpg")
    (tmp_path / "a.txt").write_text(" a red square \n")
    (tmp_path / "notes.md").write_text("ignored")
    assert folder_pictures(tmp_path) == [(tmp_path / "a.jpg", "a red square"), (tmp_path / "b.png", "")]
    with pytest.raises(InvalidParams):
        folder_pictures(tmp_path / "missing")
