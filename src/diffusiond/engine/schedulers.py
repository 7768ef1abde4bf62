"""Sampler x schedule -> a diffusers scheduler, built from the model's own scheduler config.

Building from the model's config keeps what the checkpoint was trained with (beta schedule,
prediction type, timestep count); the sampler only picks the solver and the sigma spacing.
"""

from __future__ import annotations

import importlib.util
import inspect
from collections.abc import Mapping
from functools import cache
from typing import Any

from diffusiond.domain.errors import InvalidParams
from diffusiond.domain.params import Sampler, Schedule

# (class name, extra config) per sampler. K_DPMPP_SDE is resolved at build time (needs torchsde).
_SAMPLERS: dict[Sampler, tuple[str, dict[str, Any]]] = {
    Sampler.DDIM: ("DDIMScheduler", {}),
    Sampler.DDPM: ("DDPMScheduler", {}),
    Sampler.K_DPMPP_2M: ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    # diffusers has no ancestral 2S solver; the stochastic single-step DPM++ of order 2 is the
    # closest: same second-order single-step updates, with fresh noise injected each step.
    Sampler.K_DPMPP_2S_ANCESTRAL: (
        "DPMSolverSinglestepScheduler",
        {"algorithm_type": "sde-dpmsolver++", "solver_order": 2},
    ),
    Sampler.K_DPMPP_SDE: ("DPMSolverSDEScheduler", {}),
    Sampler.K_DPM_2: ("KDPM2DiscreteScheduler", {}),
    Sampler.K_DPM_2_ANCESTRAL: ("KDPM2AncestralDiscreteScheduler", {}),
    Sampler.K_EULER: ("EulerDiscreteScheduler", {}),
    Sampler.K_EULER_ANCESTRAL: ("EulerAncestralDiscreteScheduler", {}),
    Sampler.K_HEUN: ("HeunDiscreteScheduler", {}),
    Sampler.K_LMS: ("LMSDiscreteScheduler", {}),
    Sampler.UNIPC: ("UniPCMultistepScheduler", {}),
    Sampler.PNDM: ("PNDMScheduler", {"skip_prk_steps": True}),
}
# Without torchsde, K_DPMPP_SDE runs as DPM++ 2M SDE: the same SDE solver family, with noise from
# the job's seeded generator instead of a Brownian tree.
_SDE_FALLBACK = ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_order": 2})
_SCHEDULE_FLAG = {Schedule.KARRAS: "use_karras_sigmas", Schedule.EXPONENTIAL: "use_exponential_sigmas"}
_ALL_FLAGS = ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas")


def _scheduler_class(name: str) -> type[Any]:
    if name == "LMSDiscreteScheduler":
        return _lms_class()
    import diffusers

    cls: type[Any] = getattr(diffusers, name)
    return cls


def _resolve(sampler: Sampler) -> tuple[str, dict[str, Any]]:
    if sampler == Sampler.K_DPMPP_SDE and importlib.util.find_spec("torchsde") is None:
        return _SDE_FALLBACK
    return _SAMPLERS[sampler]


def supports_schedule(sampler: Sampler, schedule: Schedule) -> bool:
    """Whether `sampler` can space its sigmas by `schedule` (DDIM, DDPM, PNDM, Euler a cannot)."""
    if schedule == Schedule.DEFAULT:
        return True
    cls = _scheduler_class(_resolve(sampler)[0])
    return _SCHEDULE_FLAG[schedule] in inspect.signature(cls.__init__).parameters


def build_scheduler(base_config: Mapping[str, Any], sampler: Sampler, schedule: Schedule) -> Any:
    """A fresh scheduler for one job (schedulers are stateful, so never shared between jobs)."""
    if not supports_schedule(sampler, schedule):
        raise InvalidParams(
            f"sampler {sampler.value} does not support the {schedule.value} schedule",
            code="invalid_sampler_schedule",
            field="schedule",
        )
    name, extra = _resolve(sampler)
    cls = _scheduler_class(name)
    accepted = inspect.signature(cls.__init__).parameters
    overrides: dict[str, Any] = dict(extra)
    for flag in _ALL_FLAGS:  # clear whatever spacing the model's own config asked for
        if flag in accepted:
            overrides[flag] = False
    if schedule != Schedule.DEFAULT:
        overrides[_SCHEDULE_FLAG[schedule]] = True
    config = {k: v for k, v in base_config.items() if not k.startswith("_")}
    return cls.from_config({**config, **overrides})


@cache
def _lms_class() -> type[Any]:
    """diffusers' LMS scheduler with its one scipy call replaced (scipy is not a dependency).

    LMS integrates a Lagrange basis polynomial of degree order-1 (at most 3) between two sigmas;
    4-point Gauss-Legendre quadrature is exact for polynomials up to degree 7.
    """
    import numpy as np
    from diffusers.schedulers.scheduling_lms_discrete import LMSDiscreteScheduler

    nodes, weights = np.polynomial.legendre.leggauss(4)

    class ScipyFreeLMSDiscreteScheduler(LMSDiscreteScheduler):  # type: ignore[misc]
        def get_lms_coefficient(self, order: int, t: int, current_order: int) -> float:
            sigmas = [float(s) for s in self.sigmas]

            def basis(tau: float) -> float:
                prod = 1.0
                for k in range(order):
                    if k != current_order:
                        prod *= (tau - sigmas[t - k]) / (sigmas[t - current_order] - sigmas[t - k])
                return prod

            lo, hi = sigmas[t], sigmas[t + 1]
            half = (hi - lo) / 2.0
            taus = lo + half * (nodes + 1.0)
            return float(half * sum(w * basis(float(x)) for w, x in zip(weights, taus, strict=True)))

    cls: type[Any] = ScipyFreeLMSDiscreteScheduler
    return cls
