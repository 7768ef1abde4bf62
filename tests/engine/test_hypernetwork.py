"""Hypernetworks act on the cross-attention context before keys and values, for one job only."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from diffusiond.domain.errors import InvalidParams
from diffusiond.domain.models import ModelFormat, ModelKind, ModelRecord
from diffusiond.domain.params import Diffusion, GenerateSpec, HypernetworkRef, Txt2Img
from diffusiond.engine.hypernetwork import applied_hypernetworks
from diffusiond.engine.runner import Engine
from diffusiond.testing.tiny_models import save_tiny_hypernetwork
from tests.engine.conftest import Context, Resolver, diffusion


@pytest.fixture(scope="module")
def hypernetwork(resolver: Resolver, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = save_tiny_hypernetwork(tmp_path_factory.mktemp("hn") / "tiny_hn.safetensors")
    resolver.add(ModelRecord("tiny-hn", ModelKind.HYPERNETWORK, ModelFormat.SAFETENSORS, str(path), family="tiny"))
    wide = save_tiny_hypernetwork(tmp_path_factory.mktemp("hn") / "wide.safetensors", width=768)
    resolver.add(ModelRecord("wide-hn", ModelKind.HYPERNETWORK, ModelFormat.SAFETENSORS, str(wide), family="sd15"))
    return path


def run(engine: Engine, ctx: Context, d: Diffusion) -> bytes:
    return engine.run(GenerateSpec(stages=(Txt2Img(d),), seed=5), ctx)[0].image.tobytes()


def test_hypernetwork_changes_output_and_leaves_no_trace(engine: Engine, ctx: Context, hypernetwork: Path) -> None:
    plain = diffusion()
    outputs = [run(engine, ctx, d) for d in (
        plain, diffusion(hypernetworks=(HypernetworkRef("tiny-hn", 1.0),)), plain,
        diffusion(hypernetworks=(HypernetworkRef("tiny-hn", 0.0),)))]
    base, with_hn, base_again, zero = outputs
    assert with_hn != base
    assert base_again == base and zero == base  # strength 0 is the plain model; hooks are gone after


def test_only_keys_and_values_of_cross_attention_see_it(engine: Engine, resolver: Resolver,
                                                        hypernetwork: Path) -> None:
    unet = engine.cache.get("tiny").base.unet
    seen: dict[str, torch.Tensor] = {}
    attn = next(m for name, m in unet.named_modules() if name.endswith("attn2"))
    context = torch.randn(1, 3, 32)
    with applied_hypernetworks(unet, [HypernetworkRef("tiny-hn")], resolver):
        # pre-hooks run in the order they were added: these see what the projections get
        spies = [getattr(attn, p).register_forward_pre_hook(
            lambda _m, args, p=p: seen.__setitem__(p, args[0].clone())) for p in ("to_q", "to_k", "to_v")]
        try:
            attn(torch.randn(1, 4, 64), encoder_hidden_states=context)
        finally:
            for spy in spies:
                spy.remove()
    assert not torch.equal(seen["to_k"], context) and not torch.equal(seen["to_v"], context)
    assert not torch.equal(seen["to_k"], seen["to_v"])  # one network each
    assert seen["to_q"].shape == (1, 4, 64)  # queries come from the image, untouched


def test_a_hypernetwork_for_another_context_width_is_refused(engine: Engine, ctx: Context,
                                                             hypernetwork: Path) -> None:
    with pytest.raises(InvalidParams, match="widths"):
        run(engine, ctx, diffusion(hypernetworks=(HypernetworkRef("wide-hn"),)))
    assert run(engine, ctx, diffusion()) == run(engine, ctx, diffusion())  # the failed job left nothing behind
