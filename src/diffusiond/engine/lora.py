"""LoRA adapters applied to a warm pipeline for one job, and removed after it.

Adapters are loaded under job-local names with diffusers' peft integration (kohya and
diffusers/peft files both load through `load_lora_weights`), activated with `set_adapters` at the
requested weights, and deleted in `finally`: the base modules are never reloaded, and a job that
asks for no LoRA sees exactly the base model even right after one that did.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from diffusiond.domain.errors import InvalidParams
from diffusiond.domain.models import ModelKind
from diffusiond.domain.params import LoraRef
from diffusiond.engine.context import ModelResolver

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")


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


def active_adapters(pipe: Any) -> list[str]:
    """Names of the LoRA adapters currently loaded on the pipeline's modules."""
    listed = pipe.get_list_adapters() if hasattr(pipe, "get_list_adapters") else {}
    return sorted({name for names in listed.values() for name in names})


@contextmanager
def applied_loras(pipe: Any, loras: Sequence[LoraRef], resolver: ModelResolver) -> Iterator[list[str]]:
    """Load `loras` onto `pipe` for the duration of the block; yields the adapter names."""
    if not loras:
        yield []
        return
    names: list[str] = []
    try:
        for index, ref in enumerate(loras):
            record = resolver.resolve(ref.model_id, ModelKind.LORA)
            source, kwargs = lora_source(Path(record.path))
            name = f"job_lora_{index}"
            try:
                pipe.load_lora_weights(source, adapter_name=name, **kwargs)
            except (ValueError, KeyError, RuntimeError) as exc:
                if name in active_adapters(pipe):  # registered on some modules before it failed
                    names.append(name)
                raise InvalidParams(f"LoRA {ref.model_id} does not fit this model: {exc}", field="loras") from exc
            names.append(name)
        pipe.set_adapters(names, adapter_weights=[ref.weight for ref in loras])
        yield names
    finally:
        if names:
            pipe.delete_adapters(names)
