"""Dynamic batching: one forward pass for several jobs, each keeping its own prompt, seed, guidance."""

from __future__ import annotations

import pytest

from diffusiond.domain.params import GenerateSpec, Sampler, Txt2Img, WeightedPrompt
from diffusiond.engine.batching import batchable
from diffusiond.engine.context import Canceled, GeneratedImage
from diffusiond.engine.runner import Engine
from tests.engine.conftest import Context, diffusion, max_abs_diff


def job(prompt: str, seed: int, cfg: float, count: int = 1, **kwargs: object) -> GenerateSpec:
    d = diffusion(prompt=prompt, cfg_scale=cfg, steps=6, **kwargs)
    return GenerateSpec(stages=(Txt2Img(d),), seed=seed, count=count)


@pytest.mark.parametrize("sampler", [None, Sampler.K_EULER_ANCESTRAL, Sampler.DDIM])
def test_batch_matches_each_job_alone(engine: Engine, sampler: Sampler | None) -> None:
    specs = [job("a red circle", 1, 7.0, sampler=sampler), job("a blue square", 2, 3.0, count=2, sampler=sampler),
             job("a green triangle", 3, 9.0, sampler=sampler)]
    assert batchable(specs)
    batched = engine.run_batch([(s, Context()) for s in specs])
    alone = [engine.run(s, Context()) for s in specs]
    for got, want in zip(batched, alone, strict=True):
        assert isinstance(got, list)
        assert [g.seed for g in got] == [w.seed for w in want]
        for g, w in zip(got, want, strict=True):
            assert max_abs_diff(g.image, w.image) <= 3  # float tolerance, not a different image
    # the three jobs really are different images (prompt, seed and guidance were kept per job)
    assert max_abs_diff(batched[0][0].image, batched[2][0].image) > 10  # type: ignore[index]


def test_a_canceled_job_leaves_the_batch_and_the_others_finish(engine: Engine) -> None:
    specs = [job("a red circle", 1, 7.0), job("a blue square", 2, 7.0)]
    ctxs = [Context(cancel_after=2), Context()]
    results = engine.run_batch(list(zip(specs, ctxs, strict=True)))
    assert isinstance(results[0], Canceled)
    assert isinstance(results[1], list)
    alone = engine.run(specs[1], Context())
    assert max_abs_diff(results[1][0].image, alone[0].image) <= 3
    assert ctxs[1].progress[-1][1] == pytest.approx(1.0)


def test_incompatible_jobs_are_not_batched_but_still_run(engine: Engine) -> None:
    specs = [job("a red circle", 1, 7.0), job("a red circle", 1, 7.0, width=128, height=64)]
    assert not batchable(specs)
    results = engine.run_batch([(s, Context()) for s in specs])
    sizes = [r[0].image.size for r in results if isinstance(r, list) and isinstance(r[0], GeneratedImage)]
    assert sizes == [(64, 64), (128, 64)]


def test_prompts_share_nothing_across_rows(engine: Engine) -> None:
    a = job("a red circle", 5, 7.0)
    b = GenerateSpec(stages=(Txt2Img(diffusion(prompt="a red circle", steps=6, cfg_scale=7.0,
                                          negative_prompts=(WeightedPrompt("red"),))),), seed=5)
    ra, rb = engine.run_batch([(a, Context()), (b, Context())])
    assert isinstance(ra, list) and isinstance(rb, list)
    assert max_abs_diff(ra[0].image, rb[0].image) > 0  # b's negative prompt reached only b
