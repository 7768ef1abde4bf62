"""The synthetic shapes dataset: deterministic, well-formed captions, labels that match the pixels."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np

from diffusiond.engine.training import shapes_dataset as ds
from diffusiond.testing import shapes_checks as checks


def test_palette_is_large_and_well_separated() -> None:
    assert len(ds.PALETTE) >= 8 and len(ds.SHAPES) >= 3 and len(ds.SIZES) >= 2 and len(ds.POSITIONS) >= 2
    rgb = np.array(list(ds.PALETTE.values()), dtype=float)
    distances = np.linalg.norm(rgb[:, None] - rgb[None], axis=2) + np.eye(len(rgb)) * 1e9
    assert distances.min() > 75


def test_same_index_and_seed_give_the_same_sample() -> None:
    a, b = ds.sample(7, seed=3), ds.sample(7, seed=3)
    assert a.caption == b.caption and a.label == b.label
    assert np.array_equal(ds.to_array(a.image), ds.to_array(b.image))


def test_different_seeds_give_different_datasets() -> None:
    first = [s.label for s in ds.iter_samples(20, seed=0)]
    second = [s.label for s in ds.iter_samples(20, seed=1)]
    assert first != second


def test_images_have_the_requested_size() -> None:
    assert ds.sample(0, size=64).image.size == (64, 64)
    assert ds.sample(0, size=96).image.size == (96, 96)


def test_captions_name_the_shape_and_its_colour_and_never_a_wrong_attribute() -> None:
    for item in ds.iter_samples(200, seed=2):
        words = item.caption.replace(",", " ").split()
        label = item.label
        assert f"{label.color} {label.shape}" in item.caption
        mentioned_colors = {w for w in words if w in ds.PALETTE}
        assert mentioned_colors <= {label.color, label.background}
        assert {w for w in words if w in ds.SHAPES} == {label.shape}
        assert not ({w for w in words if w in ds.SIZES} - {label.size})


def test_attributes_are_roughly_balanced() -> None:
    labels = [s.label for s in ds.iter_samples(1500, seed=0)]
    for field, values in (("color", ds.COLORS), ("shape", ds.SHAPES), ("position", ds.POSITIONS)):
        counts = Counter(getattr(label, field) for label in labels)
        expected = len(labels) / len(values)
        assert set(counts) == set(values)
        assert all(0.7 * expected < n < 1.3 * expected for n in counts.values()), (field, counts)
    assert all(label.color != label.background for label in labels)


def test_full_caption_mentions_every_attribute() -> None:
    label = ds.ShapeLabel("red", "blue", "circle", "small", "left")
    assert ds.full_caption(label) == "a small red circle on the left on a blue background"


def test_labels_match_the_pixels() -> None:
    items = list(ds.iter_samples(150, seed=4))
    for item in items:
        reading = checks.read_image(item.image)
        label = item.label
        assert (reading.color, reading.background) == (label.color, label.background), item.caption
        scores = checks.template_scores(checks.foreground_mask(item.image))
        assert reading.shape == label.shape, (item.caption, scores)
        assert reading.position == label.position, item.caption
        assert reading.size == label.size, item.caption


def test_caption_templates_vary() -> None:
    rng = random.Random(0)
    label = ds.ShapeLabel("green", "white", "triangle", "large", "top")
    assert len({ds.caption_for(label, rng) for _ in range(200)}) >= 8
