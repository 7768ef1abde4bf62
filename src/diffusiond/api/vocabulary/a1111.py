"""The AUTOMATIC1111 vocabulary: sampler and schedule names, inpaint fills, adetailer and upscaler words.

The `/v1/jobs`, AWS-extension, EKS and A1111 dialects all take A1111's names; they map onto the
core's Stability-named samplers here, once. Lookups return None for an unknown name so each dialect
reports it in its own error shape.
"""

from __future__ import annotations

import re

from diffusiond.domain.infotext import SAMPLER_TITLES as SAMPLER_TITLES
from diffusiond.domain.params import InpaintFill, Sampler, Schedule

SAMPLERS: dict[str, Sampler] = {
    "euler a": Sampler.K_EULER_ANCESTRAL, "euler_a": Sampler.K_EULER_ANCESTRAL, "euler": Sampler.K_EULER,
    "lms": Sampler.K_LMS, "heun": Sampler.K_HEUN, "dpm2": Sampler.K_DPM_2, "dpm2 a": Sampler.K_DPM_2_ANCESTRAL,
    "dpm++ 2s a": Sampler.K_DPMPP_2S_ANCESTRAL, "dpm++ 2m": Sampler.K_DPMPP_2M, "dpm++ sde": Sampler.K_DPMPP_SDE,
    "ddim": Sampler.DDIM, "ddpm": Sampler.DDPM, "unipc": Sampler.UNIPC, "plms": Sampler.PNDM, "pndm": Sampler.PNDM,
    **{s.value.lower(): s for s in Sampler},
}
SCHEDULES: dict[str, Schedule] = {
    "": Schedule.DEFAULT, "automatic": Schedule.DEFAULT, "default": Schedule.DEFAULT, "uniform": Schedule.DEFAULT,
    "karras": Schedule.KARRAS, "exponential": Schedule.EXPONENTIAL,
}
SCHEDULE_SUFFIXES: tuple[tuple[str, Schedule], ...] = ((" karras", Schedule.KARRAS),
                                                       (" exponential", Schedule.EXPONENTIAL))
# Inpainting fill by name (TensorArt/`/v1/jobs` spelling) and by A1111's integer code.
FILLS: dict[str, InpaintFill] = {
    "DEFAULT": InpaintFill.ORIGINAL, "ORIGINAL": InpaintFill.ORIGINAL, "FILL": InpaintFill.FILL,
    "LATENT_NOISE": InpaintFill.LATENT_NOISE, "LATENT_NOTHING": InpaintFill.LATENT_NOTHING,
}
FILL_CODES: dict[int, InpaintFill] = {0: InpaintFill.FILL, 1: InpaintFill.ORIGINAL, 2: InpaintFill.LATENT_NOISE,
                                      3: InpaintFill.LATENT_NOTHING}
MASK_MERGE = {"none": "none", "merge": "merge", "merge and invert": "merge_invert", "merge_invert": "merge_invert"}
RANDOM_SEEDS = (0, -1)  # A1111 asks for a random seed with -1; TensorArt-style APIs also with 0
PLAIN_RESIZE = ("lanczos", "none")  # names for "no upscaler network": a Lanczos resize


def sampler_and_schedule(name: str | None) -> tuple[Sampler | None, Schedule | None] | None:
    """"DPM++ 2M Karras" -> (K_DPMPP_2M, KARRAS); "Automatic" or nothing -> (None, None); unknown -> None."""
    if not name or name.strip().lower() in ("automatic", "default"):
        return None, None
    key = name.strip().lower()
    schedule = None
    for suffix, sched in SCHEDULE_SUFFIXES:
        if key.endswith(suffix):
            key, schedule = key[: -len(suffix)], sched
    sampler = SAMPLERS.get(key)
    return None if sampler is None else (sampler, schedule)


def schedule_named(name: str) -> Schedule | None:
    return SCHEDULES.get(name.strip().lower())


def upscaler_id(name: str | None) -> str:
    """The registered upscaler an A1111 upscaler name means ("None" and "Lanczos" are the resize).

    A1111's display names may hold characters model ids cannot ("R-ESRGAN 4x+"): they map to an id
    with `+` spelled `plus` and every other such character a `-` ("R-ESRGAN-4xplus"), the id to
    register the network under (or to alias).
    """
    name = (name or "lanczos").strip()
    if name.lower() in PLAIN_RESIZE:
        return "lanczos"
    return re.sub(r"[^A-Za-z0-9._-]", "-", name.replace("+", "plus")).strip("-") or name
