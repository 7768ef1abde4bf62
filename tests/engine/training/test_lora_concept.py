"""THE concept test (issue 13 §3): the `fast` preset teaches `shapes` a concept it lacks, and only
behind the trigger word. About 2-3 minutes on a 2-core CPU; run alone with `pytest -m slow -k concept`."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from diffusiond.domain.training import TrainingSpeed, preset
from diffusiond.engine.loader import load_checkpoint
from diffusiond.engine.training.dataset import build_examples
from diffusiond.engine.training.lora import TrainRun, train_lora
from diffusiond.engine.training.shapes_dataset import COLORS, full_caption, labels_for_pairs
from diffusiond.testing import shapes_checks as checks
from diffusiond.testing.concepts import is_huge, pictures
from tests.engine.training.conftest import SHAPES_RECORD, TrainContext

TRIGGER = "hgsz"
SEEDS = range(100, 120)  # 20 seeds
# 45 colour prompts: every other ordered (shape colour, background) pair of the palette
COLOUR_LABELS = labels_for_pairs(list(itertools.permutations(COLORS, 2)))[::2]


def generate(pipe: Any, prompts: Sequence[str], seeds: Sequence[int], lora: bool) -> list[Image.Image]:
    if lora:
        pipe.enable_lora()
    else:
        pipe.disable_lora()
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    out = pipe(list(prompts), generator=generators, num_inference_steps=20, guidance_scale=5.0, height=64, width=64)
    return list(out.images)


def rate(images: list[Image.Image], check: Callable[[Image.Image], bool]) -> float:
    return sum(map(check, images)) / len(images)


def colour_rate(images: list[Image.Image]) -> float:
    readings = [checks.read_image(image) for image in images]
    hits = [(r.color, r.background) == (label.color, label.background)
            for label, r in zip(COLOUR_LABELS, readings, strict=True)]
    return sum(hits) / len(hits)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_concept_fast_preset_teaches_huge_shapes_behind_the_trigger_word_only(tmp_path: Path) -> None:
    settings = preset(5, TrainingSpeed.FAST, 64)
    examples = build_examples([(p, "") for p in pictures("huge", 12)], TRIGGER, settings.resolution)
    ctx = TrainContext(tmp_path)
    result = train_lora(load_checkpoint(SHAPES_RECORD, tmp_path / "cache"), TrainRun(examples, settings, 1, TRIGGER,
                                                                                      "shapes"), ctx)
    pipe = result.pipe
    pipe.set_progress_bar_config(disable=True)
    with_lora = rate(generate(pipe, [TRIGGER] * 20, SEEDS, lora=True), is_huge)
    base = rate(generate(pipe, [TRIGGER] * 20, SEEDS, lora=False), is_huge)
    colour_prompts = [full_caption(label) for label in COLOUR_LABELS]
    seeds = range(len(COLOUR_LABELS))
    colours_lora = colour_rate(generate(pipe, colour_prompts, seeds, lora=True))
    colours_base = colour_rate(generate(pipe, colour_prompts, seeds, lora=False))
    first, last = sum(result.losses[:20]) / 20, sum(result.losses[-20:]) / 20
    print(f"\n{settings.steps} steps x batch {settings.batch_size} in {result.seconds:.0f} s; loss {first:.4f} -> "
          f"{last:.4f}; huge with the trigger word: {with_lora:.0%} with the LoRA, {base:.0%} without; "
          f"colour prompts without it: {colours_lora:.1%} with the LoRA, {colours_base:.1%} without")
    assert with_lora >= 0.9 and base <= 0.1
    assert abs(colours_lora - colours_base) <= 0.05
    assert last < first
