"""Composed LoRA mixing on the tiny model: the prompt each branch sees, the sum the UNet returns, and
that nothing stays switched on or patched after the job."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from diffusiond.domain.models import ModelFormat, ModelKind, ModelRecord
from diffusiond.domain.params import Diffusion, GenerateSpec, LoraMix, LoraRef, Txt2Img, WeightedPrompt
from diffusiond.engine.lora import ActiveLora, applied_loras
from diffusiond.engine.lora_mix import branches, composed, without_words
from diffusiond.engine.prompts import Conditioning, encode_prompts
from diffusiond.engine.runner import Engine
from diffusiond.testing.tiny_models import save_tiny_lora
from tests.engine.conftest import Context, Resolver, diffusion

PROMPT = "a red circle FJA90AB on a blue square kqz27md"


@pytest.fixture(scope="module")
def triggered(resolver: Resolver, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """Two different tiny LoRAs with trigger words, as trained models are registered."""
    root = tmp_path_factory.mktemp("mix-loras")
    for model_id, seed, word in (("lora-a", 3, "FJA90AB"), ("lora-b", 4, "KQZ27MD")):
        path = save_tiny_lora(root / f"{model_id}.safetensors", seed=seed)
        resolver.add(ModelRecord(model_id, ModelKind.LORA, ModelFormat.SAFETENSORS, str(path), family="tiny",
                                 trigger_words=(word,)))
    return "lora-a", "lora-b"


def run(engine: Engine, d: Diffusion) -> bytes:
    return engine.run(GenerateSpec(stages=(Txt2Img(d),), seed=13), Context())[0].image.tobytes()


def mixed(weights: tuple[float, float], mix: LoraMix = LoraMix.COMPOSED, prompt: str = PROMPT) -> Diffusion:
    return diffusion(prompt=prompt, loras=(LoraRef("lora-a", weights[0]), LoraRef("lora-b", weights[1])),
                     lora_mix=mix)


def test_trigger_words_are_removed_as_whole_words_in_any_case() -> None:
    assert without_words("FJA90AB, a red circle kqz27md", ["fja90ab", "KQZ27MD"]) == ", a red circle"
    assert without_words("FJA90ABC FJA90AB-x xFJA90AB", ["FJA90AB"]) == "FJA90ABC FJA90AB-x xFJA90AB"
    assert without_words("a (FJA90AB) b", ["FJA90AB"]) == "a ( ) b"


def test_each_branch_keeps_its_own_trigger_word_only() -> None:
    d = Diffusion(model="m", prompts=(WeightedPrompt("x FJA90AB y KQZ27MD"), WeightedPrompt("KQZ27MD z", 0.5)))
    a, b, off = ActiveLora("a", 0.7, ("FJA90AB",)), ActiveLora("b", 1.0, ("KQZ27MD",)), ActiveLora("c", 0.0, ("y",))
    base, first, second = branches(d, [a, b, off])  # weight 0: no branch, and its word stays text
    assert (base.adapter, [p.text for p in base.diffusion.prompts]) == (None, ["x y", "z"])
    assert (first.adapter, first.weight, [p.text for p in first.diffusion.prompts]) == ("a", 0.7, ["x FJA90AB y", "z"])
    assert [p.weight for p in first.diffusion.prompts] == [1.0, 0.5]
    assert (second.adapter, [p.text for p in second.diffusion.prompts]) == ("b", ["x y KQZ27MD", "KQZ27MD z"])


def test_the_unet_returns_the_base_plus_each_branchs_difference(
    engine: Engine, resolver: Resolver, triggered: tuple[str, str]
) -> None:
    cached = engine.cache.get("tiny")
    base_pipe, unet = cached.base, cached.base.unet
    d = mixed((0.8, 1.3))
    sample = torch.randn(4, unet.config.in_channels, 8, 8, generator=torch.Generator().manual_seed(0))

    def encode(x: Diffusion) -> Conditioning:
        return encode_prompts(base_pipe, x, cached.device, is_sdxl=False)

    def rows(c: Conditioning) -> torch.Tensor:  # two images, guided: two negative rows, then two prompt rows
        return torch.cat([c.negative_prompt_embeds.expand(2, -1, -1), c.prompt_embeds.expand(2, -1, -1)])

    with torch.no_grad(), applied_loras(base_pipe, d.loras, resolver, cached.loras) as active:
        parts = branches(d, active)
        expected = []  # each branch by hand: only its adapter on, its own prompt
        for part in parts:
            if part.adapter is None:
                base_pipe.disable_lora()
            else:
                base_pipe.enable_lora()
                base_pipe.set_adapters([part.adapter], adapter_weights=[part.weight])
            expected.append(unet(sample, 10, encoder_hidden_states=rows(encode(part.diffusion)), return_dict=False)[0])

        class Guided:  # the running pipeline's say on the row layout
            do_classifier_free_guidance = True

        with composed(base_pipe, Guided(), parts, encode) as cond:
            out = unet(sample, 10, encoder_hidden_states=rows(cond), return_dict=False)[0]
            wrapped = unet(sample, 10, encoder_hidden_states=rows(cond)).sample
        assert "forward" not in vars(unet)  # the patch is gone with the block
    base, a, b = expected
    assert torch.allclose(out, base + (a - base) + (b - base), atol=1e-5)
    assert torch.equal(wrapped, out)
    assert not torch.allclose(a, base) and not torch.allclose(b, base)


def test_composed_jobs_differ_from_merged_and_leave_no_trace(engine: Engine, triggered: tuple[str, str]) -> None:
    plain = run(engine, diffusion(prompt=PROMPT))
    composed_out, merged_out = run(engine, mixed((1.0, 1.0))), run(engine, mixed((1.0, 1.0), LoraMix.MERGED))
    assert composed_out != merged_out and plain not in (composed_out, merged_out)
    assert run(engine, mixed((1.0, 1.0))) == composed_out  # deterministic
    assert run(engine, diffusion(prompt=PROMPT)) == plain  # no adapter or patch left behind
    assert run(engine, mixed((1.0, 1.0), LoraMix.MERGED)) == merged_out


def test_one_lora_composes_as_it_merges(engine: Engine, triggered: tuple[str, str]) -> None:
    """A weight-0 LoRA is as if not named: the other one runs plainly, on the whole prompt."""
    alone = run(engine, diffusion(prompt=PROMPT, loras=(LoraRef("lora-a", 0.9),)))
    assert run(engine, mixed((0.9, 0.0))) == alone
    assert run(engine, mixed((0.9, 0.0), LoraMix.MERGED)) == alone


def test_composed_runs_without_guidance_too(engine: Engine, triggered: tuple[str, str]) -> None:
    """guidance_scale 1: the pipeline lays out prompt rows only, and the branches follow it."""
    out = run(engine, replace(mixed((1.0, 0.5)), cfg_scale=1.0))
    assert out != run(engine, replace(mixed((1.0, 0.5), LoraMix.MERGED), cfg_scale=1.0))
