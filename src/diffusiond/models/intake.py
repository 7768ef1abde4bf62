"""Uploaded model files: what is in them, decided from their bytes, before anything is registered.

An upload is hostile until checked, like an uploaded image (blobs/images.py):

1. its size is capped;
2. a tar archive (sniffed from its bytes, whatever its name: the AWS extension's client uploads
   one named like the model) is unpacked member by member into a fresh folder: only regular files
   and folders, no absolute paths, no `..`, no links or devices, at most `max_members` members and
   `max_bytes` in all;
3. every model file must be a well-formed .safetensors file: its header is parsed and every
   tensor's offsets checked against the file size. Pickle formats (.ckpt/.pt/.bin/.pth, or pickle
   and torch-zip bytes under any name) are refused and never unpickled;
4. each file's kind (checkpoint, LoRA, embedding, hypernetwork, ControlNet, VAE) and family (SD 1.x,
   2.x, XL, or the family a self-describing file names) are read from its tensor names and shapes.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from diffusiond.domain.errors import InvalidParams, PayloadTooLarge
from diffusiond.domain.models import ModelKind
from diffusiond.models.registry import detect_checkpoint_family

PICKLE_SUFFIXES = {".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle"}
IGNORED_SUFFIXES = {".yaml", ".yml", ".txt", ".json", ".md", ".png", ".jpg", ".jpeg", ".webp"}  # beside models
MAX_HEADER = 100 * 1024 * 1024
DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
               "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
_HYPERNETWORK_KEY = re.compile(r"^\d+\.[01]\.linear\.\d+\.(weight|bias)$")
_LORA_MARKERS = ("lora_up", "lora_down", "lora_A", "lora_B", "lora.up", "lora.down", "lora_unet_", "lora_te",
                 "hada_w", "lokr_w")
_EMBEDDING_KEYS = {"emb_params", "clip_l", "clip_g", "string_to_param.*", "string_to_token", "name", "step"}


@dataclass(frozen=True)
class IntakeLimits:
    max_bytes: int  # one uploaded file, and all of an archive's members together
    max_members: int  # entries of an archive


@dataclass(frozen=True)
class ModelFile:
    """A checked .safetensors file found in an upload."""

    path: Path
    name: str  # its file name (in an archive: the member's base name)
    kind: ModelKind
    family: str


def inspect_upload(path: Path, name: str, work: Path, limits: IntakeLimits) -> list[ModelFile]:
    """The model files in the uploaded file `path` (named `name` by its client); a tar is unpacked
    under `work`. Raises InvalidParams (or PayloadTooLarge) naming the problem; registers nothing."""
    size = path.stat().st_size
    if size > limits.max_bytes:
        raise PayloadTooLarge(f"{name}: {size:,} bytes; the most a model file may have is {limits.max_bytes:,}")
    if is_tar(path):
        work.mkdir(parents=True, exist_ok=True)
        files = [f for f in unpack_tar(path, work, limits) if f.suffix.lower() not in IGNORED_SUFFIXES]
        if not files:
            raise InvalidParams(f"{name}: the archive holds no .safetensors model file", code="invalid_model_file")
        return [inspect_file(f, f.name) for f in files]
    return [inspect_file(path, name)]


def inspect_file(path: Path, name: str) -> ModelFile:
    if PurePosixPath(name).suffix.lower() in PICKLE_SUFFIXES or looks_pickled(path):
        raise InvalidParams(f"{name}: pickle model formats (.ckpt, .pt, .bin, .pth) are never loaded; convert "
                            "it to .safetensors", code="unsafe_model_format")
    keys, metadata = read_safetensors_header(path, name)
    kind, family = classify(keys, metadata, name)
    return ModelFile(path=path, name=name, kind=kind, family=family)


def is_tar(path: Path) -> bool:
    with path.open("rb") as f:
        head = f.read(265)
    return len(head) >= 262 and head[257:262] == b"ustar"


def looks_pickled(path: Path) -> bool:
    """Pickle protocol 2+ bytes, or a zip (torch.save's format), whatever the file is called."""
    with path.open("rb") as f:
        head = f.read(4)
    return (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5) or head == b"PK\x03\x04"


def read_safetensors_header(path: Path, name: str) -> tuple[dict[str, list[int]], dict[str, str]]:
    """Tensor names and shapes, and metadata, after checking the whole layout against the file size."""
    def bad(why: str) -> InvalidParams:
        return InvalidParams(f"{name} is not a valid .safetensors file: {why}", code="invalid_model_file")

    size = path.stat().st_size
    with path.open("rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise bad("too short")
        (length,) = struct.unpack("<Q", raw)
        if length < 2 or length > min(MAX_HEADER, size - 8):
            raise bad("its header length is out of range")
        try:
            header = json.loads(f.read(length))
        except (ValueError, UnicodeDecodeError):
            raise bad("its header is not JSON") from None
    if not isinstance(header, dict):
        raise bad("its header is not an object")
    meta = header.pop("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise bad("its metadata must map strings to strings")
    data_bytes = size - 8 - length
    keys: dict[str, list[int]] = {}
    end = 0
    for key, entry in header.items():
        if not isinstance(entry, dict):
            raise bad(f"tensor {key!r} is not described")
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if dtype not in DTYPE_BYTES or not isinstance(shape, list) or not all(
                isinstance(d, int) and d >= 0 for d in shape):
            raise bad(f"tensor {key!r} has a bad dtype or shape")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)
                and 0 <= offsets[0] <= offsets[1] <= data_bytes):
            raise bad(f"tensor {key!r} points outside the file")
        count = 1
        for d in shape:
            count *= d
        if offsets[1] - offsets[0] != count * DTYPE_BYTES[dtype]:
            raise bad(f"tensor {key!r} has {offsets[1] - offsets[0]} bytes for shape {shape}")
        keys[key] = shape
        end = max(end, offsets[1])
    if not keys:
        raise bad("it holds no tensors")
    if end != data_bytes:
        raise bad("its tensors do not cover the data")
    return keys, {str(k): str(v) for k, v in meta.items()}


def classify(keys: dict[str, list[int]], metadata: dict[str, str], name: str) -> tuple[ModelKind, str]:
    """The model kind and family a file's tensor names and shapes say."""
    names = list(keys)
    if any(k.startswith("model.diffusion_model.") for k in names) or "diffusiond.config" in metadata:
        family = detect_checkpoint_family(keys, metadata)
        if family == "unknown":
            raise InvalidParams(f"{name}: not a recognised SD 1.x/2.x/XL checkpoint (a non-standard model must "
                                "carry its config; see `diffusiond models export`)", code="invalid_model_file")
        return ModelKind.CHECKPOINT, family
    if any(k.startswith(("control_model.", "controlnet_")) or "input_hint_block" in k for k in names):
        return ModelKind.CONTROLNET, "sdxl" if any("add_embedding" in k or "label_emb" in k for k in names) else "sd15"
    if any(marker in k for k in names for marker in _LORA_MARKERS):
        sdxl = any("lora_te2_" in k or "text_encoder_2" in k for k in names)
        return ModelKind.LORA, "sdxl" if sdxl else "sd15"
    if all(_HYPERNETWORK_KEY.match(k) for k in names):
        dims = {int(k.split(".", 1)[0]) for k in names}
        return ModelKind.HYPERNETWORK, "sd2" if 1024 in dims else "sdxl" if 2048 in dims else "sd15"
    if all(k in _EMBEDDING_KEYS or k.startswith("string_to_param.") for k in names):
        if "clip_g" in keys:
            return ModelKind.EMBEDDING, "sdxl"
        width = next((shape[-1] for shape in keys.values() if shape), 0)
        return ModelKind.EMBEDDING, {768: "sd15", 1024: "sd2"}.get(width, "any")
    vae_parts = ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.", "first_stage_model.")
    if all(k.startswith(vae_parts) for k in names):
        return ModelKind.VAE, "sd15"
    raise InvalidParams(f"{name}: not a recognised model file (checkpoint, LoRA, embedding, hypernetwork, "
                        "ControlNet or VAE)", code="invalid_model_file")


def unpack_tar(archive: Path, dest: Path, limits: IntakeLimits) -> list[Path]:
    """Extract an archive's regular files under `dest`, refusing anything that could escape it."""
    def bad(why: str) -> InvalidParams:
        return InvalidParams(f"unsafe archive: {why}", code="unsafe_archive")

    root = dest.resolve()
    files: list[Path] = []
    total = 0
    try:
        with tarfile.open(archive, mode="r:") as tar:
            for count, member in enumerate(tar, start=1):
                if count > limits.max_members:
                    raise bad(f"more than {limits.max_members} entries")
                parts = PurePosixPath(member.name).parts
                if not parts or member.name.startswith("/") or ".." in parts or "\\" in member.name or any(
                        ":" in p for p in parts):
                    raise bad(f"entry {member.name!r} has an absolute or parent path")
                target = root.joinpath(*[p for p in parts if p != "."])
                if not target.resolve().is_relative_to(root):
                    raise bad(f"entry {member.name!r} leaves the archive's folder")
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                if not member.isreg():
                    raise bad(f"entry {member.name!r} is a link, device or fifo")
                total += member.size
                if total > limits.max_bytes:
                    raise PayloadTooLarge(f"the archive unpacks to more than {limits.max_bytes:,} bytes")
                if target.exists():
                    raise bad(f"entry {member.name!r} appears twice")
                target.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                if source is None:
                    raise bad(f"entry {member.name!r} cannot be read")
                with source, target.open("wb") as out:
                    shutil.copyfileobj(source, out, 1024 * 1024)
                files.append(target)
    except tarfile.TarError as e:
        raise bad(f"not a readable tar archive ({e})") from None
    return files
