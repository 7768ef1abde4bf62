"""Job specs <-> JSON, so a job row holds exactly what the worker will run.

Each kind of work has one spec type; the row's `kind` column says which one its `spec` holds.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from enum import Enum
from typing import Any

from diffusiond.domain.jobs import JobKind
from diffusiond.domain.merge import MergeSpec
from diffusiond.domain.params import (
    Adetailer,
    GenerateSpec,
    ImageFormat,
    ImageRef,
    Img2Img,
    Inpaint,
    Stage,
    Txt2Img,
    Upscale,
)
from diffusiond.domain.training import TrainSpec

WorkSpec = GenerateSpec | TrainSpec | MergeSpec
SPEC_TYPES: dict[JobKind, type[Any]] = {
    JobKind.GENERATE: GenerateSpec,
    JobKind.TRAIN: TrainSpec,
    JobKind.MERGE: MergeSpec,
}

STAGE_TYPES: dict[str, type[Any]] = {
    "txt2img": Txt2Img,
    "img2img": Img2Img,
    "inpaint": Inpaint,
    "upscale": Upscale,
    "adetailer": Adetailer,
}


def _encode(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [_encode(v) for v in value]
    return value


def _decode(tp: Any, value: Any) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _decode(args[0], value) if len(args) == 1 else value
    if origin is tuple:
        (item,) = typing.get_args(tp)[:1]
        return tuple(_decode(item, v) for v in value)
    if isinstance(tp, type) and issubclass(tp, Enum):
        return tp(value)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _decode_dataclass(tp, value)
    return value


_FIELDS: dict[type[Any], tuple[tuple[str, Any], ...]] = {}


def _init_fields(cls: type[Any]) -> tuple[tuple[str, Any], ...]:
    """(name, resolved type) of a dataclass's init fields; resolving the hints is the slow part."""
    fields = _FIELDS.get(cls)
    if fields is None:
        hints = typing.get_type_hints(cls)
        fields = _FIELDS[cls] = tuple((f.name, hints[f.name]) for f in dataclasses.fields(cls) if f.init)
    return fields


def _decode_dataclass(cls: type[Any], data: dict[str, Any]) -> Any:
    return cls(**{name: _decode(tp, data[name]) for name, tp in _init_fields(cls) if name in data})


def kind_of(spec: WorkSpec) -> JobKind:
    for kind, cls in SPEC_TYPES.items():
        if isinstance(spec, cls):
            return kind
    raise TypeError(f"not a job spec: {type(spec).__name__}")


def spec_to_json(spec: WorkSpec) -> str:
    return json.dumps(_encode(spec), sort_keys=True, separators=(",", ":"))


def spec_from_json(raw: str, kind: JobKind = JobKind.GENERATE) -> WorkSpec:
    """The spec a row of `kind` holds."""
    if kind is JobKind.GENERATE:
        return generate_spec_from_json(raw)
    spec: WorkSpec = _decode_dataclass(SPEC_TYPES[kind], json.loads(raw))
    return spec


def generate_spec_from_json(raw: str) -> GenerateSpec:
    data = json.loads(raw)
    stages: list[Stage] = [_decode_dataclass(STAGE_TYPES[s["kind"]], s) for s in data["stages"]]
    init = _decode_dataclass(ImageRef, data["init"]) if data.get("init") else None
    return GenerateSpec(stages=tuple(stages), count=data["count"], seed=data["seed"], init=init,
                        output_format=ImageFormat(data.get("output_format", "png")),
                        preview_seconds=float(data.get("preview_seconds", 0.0)))


