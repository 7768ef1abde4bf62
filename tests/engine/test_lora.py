from __future__ import annotations

from pathlib import Path

import pytest

from diffusiond.domain.errors import InvalidParams
from diffusiond.domain.models import ModelFormat, ModelKind, ModelRecord
from diffusiond.domain.params import Diffusion, JobSpec, LoraRef, Txt2Img
from diffusiond.engine.lora import active_adapters
from diffusiond.engine.runner import Engine
from tests.engine.conftest import Context, Resolver, diffusion


def run(engine: Engine, ctx: Context, d: Diffusion) -> bytes:
    return engine.run(JobSpec(stages=(Txt2Img(d),), seed=13), ctx)[0].image.tobytes()


def test_lora_changes_output_and_leaves_no_trace(engine: Engine, ctx: Context) -> None:
    plain = diffusion()
    with_lora = diffusion(loras=(LoraRef("tiny-lora", 1.0),))
    half_lora = diffusion(loras=(LoraRef("tiny-lora", 0.3),))
    # interleave jobs with and without the adapter on one warm pipeline
    outputs = [run(engine, ctx, d) for d in (plain, with_lora, plain, half_lora, with_lora, plain)]
    base, lora, base_again, half, lora_again, base_last = outputs
    assert lora != base and half not in (base, lora)
    assert base_again == base == base_last  # removing the adapter restores the base output exactly
    assert lora_again == lora  # and reapplying it reproduces the LoRA output
    pipe = engine.cache.get("tiny").base
    assert active_adapters(pipe) == []


def test_kohya_file_matches_the_diffusers_file(engine: Engine, ctx: Context) -> None:
    peft = run(engine, ctx, diffusion(loras=(LoraRef("tiny-lora", 0.8),)))
    kohya = run(engine, ctx, diffusion(loras=(LoraRef("tiny-kohya", 0.8),)))
    assert kohya == peft
    assert active_adapters(engine.cache.get("tiny").base) == []


def test_two_loras_stack(engine: Engine, ctx: Context) -> None:
    one = run(engine, ctx, diffusion(loras=(LoraRef("tiny-lora", 0.5),)))
    two = run(engine, ctx, diffusion(loras=(LoraRef("tiny-lora", 0.5), LoraRef("tiny-kohya", 0.5))))
    assert one != two
    assert active_adapters(engine.cache.get("tiny").base) == []


def test_lora_that_does_not_fit_leaves_no_adapter(
    engine: Engine, ctx: Context, resolver: Resolver, tmp_path: Path
) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    good = resolver.resolve("tiny-kohya", ModelKind.LORA).path
    state = load_file(good)
    # the last module gets matrices of the wrong width: loading fails half-way through
    last = sorted(k for k in state if k.endswith("lora_down.weight"))[-1]
    state[last] = torch.zeros(state[last].shape[0], 7)
    bad = tmp_path / "bad.safetensors"
    save_file(state, str(bad))
    resolver.add(ModelRecord("bad-lora", ModelKind.LORA, ModelFormat.SAFETENSORS, str(bad)))
    base = run(engine, ctx, diffusion())
    with pytest.raises(InvalidParams):
        run(engine, ctx, diffusion(loras=(LoraRef("tiny-lora"), LoraRef("bad-lora"))))
    assert active_adapters(engine.cache.get("tiny").base) == []
    assert run(engine, ctx, diffusion()) == base


def test_lora_refuses_pickles(engine: Engine, ctx: Context, resolver: Resolver, tmp_path: Path) -> None:
    pt = tmp_path / "lora.pt"
    pt.write_bytes(b"never read")
    resolver.add(ModelRecord("pickled-lora", ModelKind.LORA, ModelFormat.SAFETENSORS, str(pt)))
    with pytest.raises(InvalidParams, match="pickle"):
        run(engine, ctx, diffusion(loras=(LoraRef("pickled-lora"),)))
    assert active_adapters(engine.cache.get("tiny").base) == []
