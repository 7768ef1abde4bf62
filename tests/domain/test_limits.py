"""Stability's size rules per model family."""

from __future__ import annotations

import pytest

from diffusiond.domain.errors import InvalidParams
from diffusiond.domain.limits import check_size


@pytest.mark.parametrize("w,h,family", [(512, 512, "sd15"), (1024, 1024, "sd15"), (768, 768, "sd2-768"),
                                        (64, 64, "shapes"), (512, 512, "shapes")])
def test_allowed(w: int, h: int, family: str) -> None:
    check_size(w, h, family)


@pytest.mark.parametrize("w,h,family,code", [
    (500, 512, "sd15", "invalid_height_or_width"),
    (64, 512, "sd15", "invalid_height_or_width"),
    (256, 256, "sd15", "invalid_pixel_count"),
    (1088, 1024, "sd15", "invalid_pixel_count"),
    (512, 512, "sd2-768", "invalid_pixel_count"),
    (96, 64, "shapes", "invalid_height_or_width"),
])
def test_refused_with_the_spec_error_name(w: int, h: int, family: str, code: str) -> None:
    with pytest.raises(InvalidParams) as e:
        check_size(w, h, family)
    assert e.value.code == code
