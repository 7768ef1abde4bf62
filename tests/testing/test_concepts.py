"""The concepts the `shapes` model lacks: their pictures are found by their checks, palette pictures never."""

from __future__ import annotations

from pathlib import Path

from diffusiond.engine.training.shapes_dataset import iter_samples
from diffusiond.testing.concepts import is_huge, is_stripe, main, pictures, reaches_both_sides


def test_concept_pictures_are_found_and_the_base_models_world_is_not() -> None:
    huge, stripes = pictures("huge", 12), pictures("stripe", 12)
    assert all(map(is_huge, huge)) and not any(map(is_stripe, huge)) and not any(map(reaches_both_sides, huge))
    assert all(map(is_stripe, stripes)) and not any(map(is_huge, stripes))
    world = [s.image for s in iter_samples(200)]  # what the base model was trained on
    assert not any(map(is_huge, world)) and not any(map(reaches_both_sides, world))
    assert [i.tobytes() for i in pictures("huge", 3)] == [i.tobytes() for i in pictures("huge", 3)]


def test_the_command_writes_the_pictures(tmp_path: Path) -> None:
    main(["stripe", str(tmp_path / "stripe"), "--count", "5"])
    assert sorted(p.name for p in (tmp_path / "stripe").iterdir()) == [f"stripe-{i:02d}.png" for i in range(5)]
