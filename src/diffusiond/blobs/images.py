"""Decoding untrusted image uploads and encoding outputs.

Uploads are hostile until validated: size cap before decoding, format sniffed from the bytes (not
the declared type), a pixel cap checked from the header before pixels are decoded (decompression
bombs), then a full decode and a re-encode so nothing but pixels survives.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from diffusiond.domain.errors import InvalidParams, PayloadTooLarge
from diffusiond.domain.limits import MAX_UPLOAD_SIDE

ALLOWED_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
MIME_ALIASES = {"image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg", "image/x-png": "image/png"}


@dataclass(frozen=True)
class DecodedImage:
    image: Image.Image
    mime: str  # the real type, sniffed from the bytes


def decode_upload(data: bytes, *, max_bytes: int, max_pixels: int, declared_mime: str | None = None,
                  field: str = "image") -> DecodedImage:
    if not data:
        raise InvalidParams(f"{field}: is required and must not be empty", code="invalid_file_size")
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"{field}: file is {len(data):,} bytes; the limit is {max_bytes:,}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            probe = Image.open(io.BytesIO(data), formats=list(ALLOWED_FORMATS))
            fmt = probe.format or ""
            width, height = probe.size
            if width * height > max_pixels:
                raise InvalidParams(
                    f"{field}: {width}x{height} exceeds the limit of {max_pixels:,} pixels",
                    code="invalid_image_dimensions")
            probe.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InvalidParams(f"{field}: image is too large to decode", code="invalid_image_dimensions") from None
    except InvalidParams:
        raise
    except Exception:
        raise InvalidParams(f"{field}: not a valid PNG, JPEG or WebP image", code="invalid_mime_type") from None
    mime = ALLOWED_FORMATS[fmt]
    if declared_mime:
        declared = MIME_ALIASES.get(declared_mime.lower(), declared_mime.lower())
        if declared not in ("application/octet-stream", mime):
            raise InvalidParams(f"{field}: declared {declared_mime} but the bytes are {mime}",
                                code="invalid_mime_type")
    mode = "RGBA" if probe.mode in ("RGBA", "LA", "PA") or "transparency" in probe.info else "RGB"
    image = probe.convert(mode)
    return DecodedImage(image=image, mime=mime)


@dataclass(frozen=True)
class UploadRules:
    """The one set of limits every dialect applies to an uploaded image (built from Settings)."""

    max_bytes: int
    max_pixels: int
    max_side: int = MAX_UPLOAD_SIDE

    def decode(self, data: bytes, declared_mime: str | None = None, *, field: str = "image",
               keep_alpha: bool = False) -> Image.Image:
        """The upload's pixels (RGB, or RGBA with `keep_alpha` when it has transparency), or a 4xx."""
        decoded = decode_upload(data, max_bytes=self.max_bytes, max_pixels=self.max_pixels,
                                declared_mime=declared_mime, field=field)
        image = decoded.image
        if max(image.size) > self.max_side:
            raise InvalidParams(f"{field}: {image.width}x{image.height} exceeds {self.max_side} pixels a side",
                                code="invalid_image_dimensions")
        return image if keep_alpha or image.mode == "RGB" else image.convert("RGB")

    def reencode(self, data: bytes, declared_mime: str | None = None, *, field: str = "image",
                 keep_alpha: bool = False) -> tuple[bytes, int, int]:
        """The upload as PNG bytes (nothing but pixels survives), with its width and height."""
        image = self.decode(data, declared_mime, field=field, keep_alpha=keep_alpha)
        return encode_png(image), image.width, image.height


IMAGE_FORMATS: dict[str, tuple[str, str]] = {  # format -> (mime, file extension)
    "png": ("image/png", "png"), "jpeg": ("image/jpeg", "jpg"), "webp": ("image/webp", "webp"),
}


def encode_image(image: Image.Image, format: str = "png", *, text: Mapping[str, str] | None = None) -> bytes:
    """An output image in `format` (png, jpeg or webp); JPEG drops any alpha channel.

    `text` becomes PNG tEXt/iTXt chunks (A1111 keeps its generation parameters in `parameters`);
    JPEG and WebP carry it as the EXIF UserComment, as A1111 writes them.
    """
    if format == "png":
        return encode_png(image, text=text)
    buf = io.BytesIO()
    extra: dict[str, Any] = {}
    if text and "parameters" in text:
        exif = Image.Exif()
        exif[0x9286] = text["parameters"]  # UserComment
        extra["exif"] = exif.tobytes()
    if format == "jpeg":
        image.convert("RGB").save(buf, format="JPEG", quality=92, **extra)
    else:
        image.save(buf, format="WEBP", quality=92, **extra)
    return buf.getvalue()


def encode_png(image: Image.Image, *, compress_level: int = 1, text: Mapping[str, str] | None = None) -> bytes:
    """PNG bytes; a low compression level because encoding sits on the request path."""
    buf = io.BytesIO()
    info = None
    if text:
        info = PngInfo()
        for key, value in text.items():
            if value.isascii():
                info.add_text(key, value)
            else:
                info.add_itxt(key, value)
    image.save(buf, format="PNG", compress_level=compress_level, pnginfo=info)
    return buf.getvalue()


def png_text(data: bytes) -> dict[str, str]:
    """The text chunks of a PNG (tEXt, zTXt, iTXt), or the EXIF UserComment of a JPEG or WebP."""
    with Image.open(io.BytesIO(data)) as img:
        found = {k: v for k, v in getattr(img, "text", {}).items() if isinstance(v, str)}
        if not found:
            exif = img.getexif()
            comment = exif.get_ifd(0x8769).get(0x9286) or exif.get(0x9286)
            if isinstance(comment, bytes):
                head, body = comment[:8], comment[8:]
                if head.startswith(b"UNICODE"):
                    comment = body.decode("utf-16-be", "replace")
                elif head.startswith(b"ASCII"):
                    comment = body.decode("ascii", "replace")
                else:
                    comment = comment.decode("utf-8", "replace")
            if isinstance(comment, str) and comment.strip("\0"):
                found["parameters"] = comment.strip("\0")
        return found


def open_image(data: bytes) -> Image.Image:
    """Open bytes the server itself wrote (already validated)."""
    img = Image.open(io.BytesIO(data))
    img.load()
    return img
