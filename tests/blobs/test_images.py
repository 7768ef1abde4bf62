"""Hostile uploads: size cap, sniffed type, pixel cap before decode, re-encoding."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image

from diffusiond.blobs.images import decode_upload
from diffusiond.domain.errors import InvalidParams, PayloadTooLarge

LIMITS = {"max_bytes": 1_000_000, "max_pixels": 1024 * 1024}


def png(size: tuple[int, int] = (32, 16), mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, (10, 20, 30, 40)[: len(mode)]).save(buf, "PNG")
    return buf.getvalue()


def test_valid_png_decodes_and_reports_real_type() -> None:
    out = decode_upload(png(), declared_mime="image/png", **LIMITS)
    assert out.mime == "image/png" and out.image.size == (32, 16) and out.image.mode == "RGB"


def test_alpha_is_kept() -> None:
    assert decode_upload(png(mode="RGBA"), **LIMITS).image.mode == "RGBA"


@pytest.mark.parametrize("fmt,mime", [("JPEG", "image/jpeg"), ("WEBP", "image/webp")])
def test_jpeg_and_webp_accepted(fmt: str, mime: str) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, fmt)
    assert decode_upload(buf.getvalue(), declared_mime=mime, **LIMITS).mime == mime


def test_declared_type_must_match_bytes() -> None:
    with pytest.raises(InvalidParams) as e:
        decode_upload(png(), declared_mime="image/jpeg", **LIMITS)
    assert e.value.code == "invalid_mime_type"


@pytest.mark.parametrize("data", [b"GIF89a" + b"\0" * 100, b"%PDF-1.4 hello", b"\x89PNG\r\n\x1a\n garbage"])
def test_non_images_refused(data: bytes) -> None:
    with pytest.raises(InvalidParams) as e:
        decode_upload(data, **LIMITS)
    assert e.value.code == "invalid_mime_type"


def test_too_many_bytes_refused_before_decoding() -> None:
    with pytest.raises(PayloadTooLarge):
        decode_upload(b"\0" * 1_000_001, **LIMITS)


def test_empty_refused() -> None:
    with pytest.raises(InvalidParams):
        decode_upload(b"", **LIMITS)


def bomb_png(width: int, height: int) -> bytes:
    """A tiny file whose header claims a huge image (a decompression bomb)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\0" * (width + 1) * 64)  # far fewer rows than claimed
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def test_decompression_bomb_refused_from_header() -> None:
    data = bomb_png(60_000, 60_000)
    assert len(data) < 100_000
    with pytest.raises(InvalidParams) as e:
        decode_upload(data, **LIMITS)
    assert e.value.code == "invalid_image_dimensions"


def test_text_chunks_round_trip_in_png_jpeg_and_webp() -> None:
    from diffusiond.blobs.images import encode_image, png_text

    image = Image.new("RGB", (16, 16), (10, 200, 30))
    text = "a cat\nSteps: 4, Seed: 1, Size: 16x16"
    for fmt in ("png", "jpeg", "webp"):
        assert png_text(encode_image(image, fmt, text={"parameters": text}))["parameters"] == text, fmt
    assert png_text(encode_image(image, "png")) == {}
    assert png_text(encode_image(image, "png", text={"parameters": "ünïcode"}))["parameters"] == "ünïcode"
