from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from diffusiond.domain.errors import InvalidParams
from diffusiond.domain.params import GenerateSpec, Txt2Img, WeightedPrompt
from diffusiond.engine.context import Canceled
from diffusiond.engine.runner import Engine
from tests.engine.conftest import Context, Resolver, diffusion


def test_importing_the_runner_does_not_import_torch() -> None:
    code = "import sys, diffusiond.engine.runner; print('torch' in sys.modules, 'diffusers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_progress_is_reported_per_image_up_to_one(engine: Engine, ctx: Context) -> None:
    engine.run(GenerateSpec(stages=(Txt2Img(diffusion(steps=4)),), count=2, seed=1), ctx)
    for index in (0, 1):
        fractions = [f for i, f in ctx.progress if i == index]
        assert fractions == sorted(fractions) and len(fractions) == 4
        assert fractions[-1] == 1.0


def test_progress_spans_stages(engine: Engine, ctx: Context) -> None:
    engine.run(GenerateSpec(stages=(Txt2Img(diffusion(steps=2)), Txt2Img(diffusion(steps=2))), seed=1), ctx)
    assert [f for _, f in ctx.progress] == [0.25, 0.5, 0.75, 1.0]


def test_cancel_raises_between_steps(engine: Engine) -> None:
    ctx = Context(cancel_after=2)
    with pytest.raises(Canceled):
        engine.run(GenerateSpec(stages=(Txt2Img(diffusion(steps=10)),), seed=1), ctx)
    assert len(ctx.progress) == 2  # it stopped at the next step, not at the end
    with pytest.raises(Canceled):  # already canceled before the first stage starts
        engine.run(GenerateSpec(stages=(Txt2Img(diffusion()),), seed=1), Context(cancel_after=0))


def test_weighted_prompts_and_style_presets_change_conditioning(engine: Engine, ctx: Context) -> None:
    def run(**kwargs: object) -> bytes:
        return engine.run(GenerateSpec(stages=(Txt2Img(diffusion(**kwargs)),), seed=2), ctx)[0].image.tobytes()

    a, b = WeightedPrompt("a red circle"), WeightedPrompt("a green triangle")
    only_a = run(prompts=(a,))
    mixed = run(prompts=(a, b))
    tilted = run(prompts=(a, WeightedPrompt(b.text, 0.2)))
    assert len({only_a, mixed, tilted}) == 3
    assert run(prompts=(a, WeightedPrompt("zzz", 0.0))) == only_a  # weight 0 drops a prompt
    assert run(prompts=(a,), style_preset="pixel-art") != only_a
    assert run(prompts=(a,), negative_prompts=(WeightedPrompt("blurry"),)) != only_a
    with pytest.raises(InvalidParams):
        run(style_preset="no-such-style")


def test_inpainting_model_can_do_txt2img(engine: Engine, ctx: Context) -> None:
    out = engine.run(GenerateSpec(stages=(Txt2Img(diffusion("tiny-inpaint", width=48, height=32)),), seed=1), ctx)
    assert out[0].image.size == (48, 32)


def test_bad_specs_are_rejected(engine: Engine, ctx: Context) -> None:
    with pytest.raises(InvalidParams):
        engine.run(GenerateSpec(stages=()), ctx)
    with pytest.raises(InvalidParams):
        engine.run(GenerateSpec(stages=(Txt2Img(diffusion(width=60)),), seed=1), ctx)


def test_cache_evicts_least_recently_used(resolver: Resolver, tmp_path: Path) -> None:
    small = Engine(resolver=resolver, cache_dir=tmp_path, device="cpu", max_models=1)
    small.warm("tiny")
    small.warm("tiny-inpaint")
    assert small.cache.loaded_ids() == ["tiny-inpaint"]
