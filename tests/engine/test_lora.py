from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from diffusiond.domain.errors import InvalidParams
from diffusiond.domain.models import ModelFormat, ModelKind, ModelRecord
from diffusiond.domain.params import Diffusion, GenerateSpec, LoraRef, Txt2Img
from diffusiond.engine.lora import DEFAULT_CAPACITY, loaded_adapters
from diffusiond.engine.runner import Engine
from tests.engine.conftest import Context, Resolver, diffusion


def run(engine: Engine, ctx: Context, d: Diffusion) -> bytes:
    return engine.run(GenerateSpec(stages=(Txt2Img(d),), seed=13), ctx)[0].image.tobytes()


def test_lora_changes_output_and_leaves_no_trace(engine: Engine, ctx: Context) -> None:
    plain = diffusion()
    with_lora = diffusion(loras=(LoraRef("tiny-lora", 1.0),))
    half_lora = diffusion(loras=(LoraRef("tiny-lora", 0.3),))
    # interleave jobs with and without the adapter on one warm pipeline
    outputs = [run(engine, ctx, d) for d in (plain, with_lora, plain, half_lora, with_lora, plain)]
    base, lora, base_again, half, lora_again, base_last = outputs
    assert lora != base and half not in (base, lora)
    assert base_again == base == base_last  # a job without LoRA gets exactly the base model
    assert lora_again == lora  # and reactivating the adapter reproduces the LoRA output
    pipe = engine.cache.get("tiny").base
    assert len([n for n in loaded_adapters(pipe) if n.startswith("tiny_lora_")]) == 1  # loaded once, kept warm


def test_kohya_file_matches_the_diffusers_file(engine: Engine, ctx: Context) -> None:
    peft = run(engine, ctx, diffusion(loras=(LoraRef("tiny-lora", 0.8),)))
    kohya = run(engine, ctx, diffusion(loras=(LoraRef("tiny-kohya", 0.8),)))
    assert kohya == peft


def test_two_loras_stack_and_duplicates_add_up(engine: Engine, ctx: Context) -> None:
    one = run(engine, ctx, diffusion(loras=(LoraRef("tiny-lora", 0.5),)))
    two = run(engine, ctx, diffusion(loras=(LoraRef("tiny-lora", 0.5), LoraRef("tiny-kohya", 0.5))))
    assert one != two
    twice = run(engine, ctx, diffusion(loras=(LoraRef("tiny-lora", 0.25), LoraRef("tiny-lora", 0.25))))
    assert twice == one


def test_warm_adapters_are_bounded(engine: Engine, ctx: Context, resolver: Resolver, tmp_path: Path) -> None:
    source = Path(resolver.resolve("tiny-lora", ModelKind.LORA).path)
    base = run(engine, ctx, diffusion())
    for i in range(DEFAULT_CAPACITY + 2):
        copy = shutil.copy(source, tmp_path / f"copy{i}.safetensors")
        resolver.add(ModelRecord(f"copy-{i}", ModelKind.LORA, ModelFormat.SAFETENSORS, str(copy)))
        run(engine, ctx, diffusion(loras=(LoraRef(f"copy-{i}"),)))
    names = loaded_adapters(engine.cache.get("tiny").base)
    assert len(names) == DEFAULT_CAPACITY
    assert not any(n.startswith("copy_0_") for n in names)  # least recently used went first
    assert run(engine, ctx, diffusion()) == base


def test_lora_that_does_not_fit_leaves_no_adapter(
    engine: Engine, ctx: Context, resolver: Resolver, tmp_path: Path
) -> None:
    state = load_file(resolver.resolve("tiny-kohya", ModelKind.LORA).path)
    # the last module gets matrices of the wrong width: loading fails half-way through
    last = sorted(k for k in state if k.endswith("lora_down.weight"))[-1]
    state[last] = torch.zeros(state[last].shape[0], 7)
    bad = tmp_path / "bad.safetensors"
    save_file(state, str(bad))
    resolver.add(ModelRecord("bad-lora", ModelKind.LORA, ModelFormat.SAFETENSORS, str(bad)))
    base = run(engine, ctx, diffusion())
    with pytest.raises(InvalidParams):
        run(engine, ctx, diffusion(loras=(LoraRef("tiny-lora"), LoraRef("bad-lora"))))
    assert not any(n.startswith("bad_lora_") for n in loaded_adapters(engine.cache.get("tiny").base))
    assert run(engine, ctx, diffusion()) == base


def test_lora_refuses_pickles(engine: Engine, ctx: Context, resolver: Resolver, tmp_path: Path) -> None:
    pt = tmp_path / "lora.pt"
    pt.write_bytes(b"never read")
    resolver.add(ModelRecord("pickled-lora", ModelKind.LORA, ModelFormat.SAFETENSORS, str(pt)))
    with pytest.raises(InvalidParams, match="pickle"):
        run(engine, ctx, diffusion(loras=(LoraRef("pickled-lora"),)))
