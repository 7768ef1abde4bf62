"""The off-palette concepts: their pictures are found by their checks, and the base palette never is."""

from __future__ import annotations

from pathlib import Path

from diffusiond.engine.training.shapes_dataset import iter_samples
from diffusiond.testing.concepts import brown_backgrounds, has_brown_background, has_pink_shape, main, pink_shapes


def test_concept_pictures_are_found_and_palette_pictures_are_not() -> None:
    pink, brown = pink_shapes(12), brown_backgrounds(12)
    assert all(map(has_pink_shape, pink)) and not any(map(has_brown_background, pink))
    assert all(map(has_brown_background, brown)) and not any(map(has_pink_shape, brown))
    palette = [s.image for s in iter_samples(200)]
    assert not any(map(has_pink_shape, palette)) and not any(map(has_brown_background, palette))
    assert pink_shapes(3) == pink_shapes(3)  # deterministic


def test_the_command_writes_the_pictures(tmp_path: Path) -> None:
    folder = tmp_path / "pink"
    main(["pink", str(folder), "--count", "5"])
    assert sorted(p.name for p in folder.iterdir()) == [f"pink-{i:02d}.png" for i in range(5)]
