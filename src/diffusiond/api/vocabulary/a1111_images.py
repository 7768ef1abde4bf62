"""A1111's input images: base64 (or `data:image/...;base64,`) strings, resized by A1111's resize modes.

`InputImages` is the `image` lookup of `a1111_processing.Lookups`: it decodes, validates with the
platform's one set of upload rules, resizes and stores each input image, and remembers what it
stored so a refused request can leave nothing behind.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from dataclasses import dataclass, field

from PIL import Image

from diffusiond.blobs.base import BlobStore
from diffusiond.blobs.images import UploadRules, encode_png
from diffusiond.domain.errors import InvalidParams
from diffusiond.domain.params import ImageRef

JUST_RESIZE, CROP_AND_RESIZE, RESIZE_AND_FILL = 0, 1, 2


def decode_base64(data: str, field_name: str) -> bytes:
    """The bytes of a plain base64 string or a base64 data URL."""
    text = data.strip()
    if text.startswith("data:"):
        header, sep, text = text.partition(",")
        if not sep or ";base64" not in header:
            raise InvalidParams(f"{field_name}: Invalid encoded image", code="invalid_encoded_image", field=field_name)
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=False)
    except (binascii.Error, ValueError):
        raise InvalidParams(f"{field_name}: Invalid encoded image", code="invalid_encoded_image",
                            field=field_name) from None


def resize_image(mode: int, image: Image.Image, width: int, height: int) -> Image.Image:
    """A1111's resize modes: 0 stretch, 1 cover and crop the centre, 2 fit and fill the margins
    with the image's own edges stretched outwards."""
    if image.size == (width, height):
        return image
    lanczos = Image.Resampling.LANCZOS
    if mode == JUST_RESIZE:
        return image.resize((width, height), lanczos)
    ratio, src_ratio = width / height, image.width / image.height
    if mode == CROP_AND_RESIZE:
        w, h = (width, image.height * width // image.width) if ratio > src_ratio else \
            (image.width * height // image.height, height)
        resized = image.resize((max(w, 1), max(h, 1)), lanczos)
        left, top = (resized.width - width) // 2, (resized.height - height) // 2
        return resized.crop((left, top, left + width, top + height))
    w, h = (image.width * height // image.height, height) if ratio > src_ratio else \
        (width, image.height * width // image.width)
    resized = image.resize((max(w, 1), max(h, 1)), lanczos)
    canvas = Image.new(image.mode, (width, height))
    left, top = (width - resized.width) // 2, (height - resized.height) // 2
    canvas.paste(resized, (left, top))
    if top > 0:  # bands above and below: the first and last rows, stretched
        canvas.paste(resized.crop((0, 0, resized.width, 1)).resize((width, top)), (0, 0))
        bottom = height - top - resized.height
        if bottom > 0:
            row = resized.crop((0, resized.height - 1, resized.width, resized.height))
            canvas.paste(row.resize((width, bottom)), (0, top + resized.height))
    elif left > 0:  # bands left and right: the first and last columns, stretched
        canvas.paste(resized.crop((0, 0, 1, resized.height)).resize((left, height)), (0, 0))
        right = width - left - resized.width
        if right > 0:
            col = resized.crop((resized.width - 1, 0, resized.width, resized.height))
            canvas.paste(col.resize((right, height)), (left + resized.width, 0))
    return canvas


@dataclass
class InputImages:
    """Stores a tenant's input images as blobs (`inputs/<tenant>/...`); `stored` lists their keys."""

    uploads: UploadRules
    blobs: BlobStore
    tenant_id: str
    stored: list[str] = field(default_factory=list)

    def __call__(self, data: str, field_name: str, size: tuple[int, int] | None, resize_mode: int) -> ImageRef:
        image = self.uploads.decode(decode_base64(data, field_name), field=field_name)
        if size is not None:
            image = resize_image(resize_mode, image, *size)
        key = f"inputs/{self.tenant_id}/{uuid.uuid4().hex}.png"
        self.blobs.put(key, encode_png(image), "image/png")
        self.stored.append(key)
        return ImageRef(key, image.width, image.height)

    def discard(self) -> None:
        """Delete every image stored so far (the request was refused)."""
        for key in self.stored:
            self.blobs.delete(key)
        self.stored.clear()
