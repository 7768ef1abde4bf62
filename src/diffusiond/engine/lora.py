"""LoRA adapters switched per job on a warm pipeline, without reloading the base model.

Adapters load with diffusers' peft integration (kohya and diffusers/peft files both go through
`load_lora_weights`) under a name derived from the file, and stay loaded for later jobs (the last
`capacity` used, per model). A job activates exactly its own adapters at its own weights with
`set_adapters`; when it ends, every adapter is disabled, so a job that asks for no LoRA runs the
plain base layers and gets exactly the base model's output (a test interleaves jobs to check it).
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffusiond.domain.errors import InvalidParams
from diffusiond.domain.models import ModelKind
from diffusiond.domain.params import LoraRef
from diffusiond.engine.context import ModelResolver

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
DEFAULT_CAPACITY = 4


@dataclass(frozen=True)
class ActiveLora:
    """An adapter a job switched on: its loaded name, its weight, and its model's trigger words."""

    name: str
    weight: float
    trigger_words: tuple[str, ...] = ()


def lora_source(path: Path) -> tuple[str, dict[str, Any]]:
    """Arguments for `load_lora_weights`: a .safetensors file, or a folder holding one."""
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise InvalidParams(f"{path.name}: pickle formats are never loaded; use .safetensors")
    if path.is_dir():
        files = sorted(path.glob("*.safetensors"))
        if len(files) != 1:
            raise InvalidParams(f"LoRA folder {path.name} must hold exactly one .safetensors file")
        return str(path), {"weight_name": files[0].name}
    if path.suffix.lower() != ".safetensors":
        raise InvalidParams(f"{path.name}: LoRA files must be .safetensors")
    return str(path.parent), {"weight_name": path.name}


def loaded_adapters(pipe: Any) -> list[str]:
    """Names of the LoRA adapters loaded on the pipeline's modules (active or not)."""
    listed = pipe.get_list_adapters() if hasattr(pipe, "get_list_adapters") else {}
    return sorted({name for names in listed.values() for name in names})


def adapter_name(model_id: str, path: Path) -> str:
    """A module-safe adapter name that changes when the file does (re-registered weights reload)."""
    stat = path.stat()
    digest = hashlib.sha1(f"{path.resolve()}:{stat.st_mtime_ns}:{stat.st_size}".encode()).hexdigest()[:10]
    return re.sub(r"\W", "_", model_id)[:40] + "_" + digest


@contextmanager
def applied_loras(
    pipe: Any,
    loras: Sequence[LoraRef],
    resolver: ModelResolver,
    warm: OrderedDict[str, None],
    capacity: int = DEFAULT_CAPACITY,
) -> Iterator[list[ActiveLora]]:
    """Activate `loras` on `pipe` for the block; `warm` tracks this model's loaded adapters (LRU)."""
    if not loras:
        if warm:  # already disabled when the last job ended; cheap to make sure
            pipe.disable_lora()
        yield []
        return
    weights: dict[str, float] = {}  # adapter name -> weight; the same LoRA twice adds up
    triggers: dict[str, tuple[str, ...]] = {}
    try:
        for ref in loras:
            record = resolver.resolve(ref.model_id, ModelKind.LORA)
            source, kwargs = lora_source(Path(record.path))
            name = adapter_name(ref.model_id, Path(record.path))
            if name not in warm:
                _load(pipe, name, source, kwargs, ref.model_id)
                warm[name] = None
            warm.move_to_end(name)
            weights[name] = weights.get(name, 0.0) + ref.weight
            triggers[name] = record.trigger_words
    except Exception:
        if warm:  # a freshly loaded adapter is active: switch it off before failing the job
            pipe.disable_lora()
        raise
    _evict(pipe, warm, capacity, keep=set(weights))
    try:
        pipe.enable_lora()
        pipe.set_adapters(list(weights), adapter_weights=list(weights.values()))
        yield [ActiveLora(name, weight, triggers[name]) for name, weight in weights.items()]
    finally:
        pipe.disable_lora()


def _load(pipe: Any, name: str, source: str, kwargs: dict[str, Any], model_id: str) -> None:
    try:
        pipe.load_lora_weights(source, adapter_name=name, **kwargs)
    except (ValueError, KeyError, RuntimeError) as exc:
        if name in loaded_adapters(pipe):  # registered on some modules before it failed
            pipe.delete_adapters([name])
        raise InvalidParams(f"LoRA {model_id} does not fit this model: {exc}", field="loras") from exc


def _evict(pipe: Any, warm: OrderedDict[str, None], capacity: int, keep: set[str]) -> None:
    for name in list(warm):
        if len(warm) <= max(capacity, len(keep)):
            return
        if name not in keep:
            pipe.delete_adapters([name])
            del warm[name]
