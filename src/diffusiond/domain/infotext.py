"""A1111's infotext: the generation parameters text it writes into every output (PNG `parameters`).

    a red circle <lora:sharp:0.8>
    Negative prompt: blurry
    Steps: 20, Sampler: Euler a, Schedule type: Karras, CFG scale: 7, Seed: 5, Size: 64x64, Model: shapes

Every dialect's outputs carry it (the A1111 and EKS APIs return it, `png-info` reads it back), so it
is written here from a GenerateSpec, once. `parse` reads the text back as A1111's png-info does.
"""

from __future__ import annotations

import re
from typing import Any

from diffusiond.domain.params import Diffusion, GenerateSpec, Img2Img, Inpaint, Sampler, Schedule, Txt2Img, Upscale

# The names A1111's /sdapi/v1/samplers lists for the core's samplers (one per core sampler).
SAMPLER_TITLES: dict[Sampler, str] = {
    Sampler.K_EULER_ANCESTRAL: "Euler a", Sampler.K_EULER: "Euler", Sampler.K_LMS: "LMS", Sampler.K_HEUN: "Heun",
    Sampler.K_DPM_2: "DPM2", Sampler.K_DPM_2_ANCESTRAL: "DPM2 a", Sampler.K_DPMPP_2S_ANCESTRAL: "DPM++ 2S a",
    Sampler.K_DPMPP_2M: "DPM++ 2M", Sampler.K_DPMPP_SDE: "DPM++ SDE", Sampler.DDIM: "DDIM", Sampler.DDPM: "DDPM",
    Sampler.UNIPC: "UniPC", Sampler.PNDM: "PLMS",
}
SCHEDULE_TITLES: dict[Schedule, str] = {Schedule.KARRAS: "Karras", Schedule.EXPONENTIAL: "Exponential"}
UPSCALER_TITLES = {"lanczos": "Lanczos"}
# `Key: value` pairs of the last line; a value may be quoted (and then hold commas).
_PAIR = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_SIZE = re.compile(r"^(\d+)x(\d+)$")


def prompt_text(d: Diffusion) -> str:
    """The prompt as A1111 writes it: the text, then each LoRA as a `<lora:NAME:WEIGHT>` tag."""
    parts = [p.text if p.weight == 1 else f"{p.text} :{p.weight:g}" for p in d.prompts]
    text = " AND ".join(parts)
    tags = " ".join(f"<lora:{lora.model_id}:{lora.weight:g}>" for lora in d.loras)
    return f"{text} {tags}".strip() if tags else text


def negative_text(d: Diffusion) -> str:
    return " AND ".join(p.text for p in d.negative_prompts)


def main_diffusion(spec: GenerateSpec) -> tuple[Diffusion, float | None] | None:
    """The diffusion of the job's first diffusing stage, and its denoising strength (None: txt2img)."""
    for stage in spec.stages:
        if isinstance(stage, Txt2Img):
            return stage.diffusion, None
        if isinstance(stage, Img2Img | Inpaint):
            return stage.diffusion, stage.strength
    return None


def parameters(spec: GenerateSpec, index: int) -> dict[str, Any] | None:
    """The `Key: value` pairs of image `index`'s infotext, in A1111's order; None without diffusion."""
    found = main_diffusion(spec)
    if found is None:
        return None
    d, strength = found
    seed = spec.image_seeds()[index] if index < spec.count else spec.seed + index
    out: dict[str, Any] = {"Steps": d.steps}
    if d.sampler is not None:
        out["Sampler"] = SAMPLER_TITLES.get(d.sampler, d.sampler.value)
    if d.schedule in SCHEDULE_TITLES:
        out["Schedule type"] = SCHEDULE_TITLES[d.schedule]
    out.update({"CFG scale": d.cfg_scale, "Seed": seed, "Size": f"{d.width}x{d.height}", "Model": d.model})
    if d.vae:
        out["VAE"] = d.vae
    if d.subseed_strength:
        out["Variation seed"] = d.subseed + index
        out["Variation seed strength"] = d.subseed_strength
    if strength is not None:
        out["Denoising strength"] = strength
    if d.clip_skip > 1:
        out["Clip skip"] = d.clip_skip
    if d.eta_noise_seed_delta:
        out["ENSD"] = d.eta_noise_seed_delta
    if d.tiling:
        out["Tiling"] = True
    if d.style_preset:
        out["Style preset"] = d.style_preset
    for stage in spec.stages:
        if isinstance(stage, Upscale) and stage.hires is not None:
            if stage.scale is not None:
                out["Hires upscale"] = stage.scale
            else:
                out["Hires resize"] = f"{stage.hires.width}x{stage.hires.height}"
            out["Hires steps"] = stage.hires.steps
            out["Hires upscaler"] = UPSCALER_TITLES.get(stage.upscaler, stage.upscaler)
            out["Denoising strength"] = stage.hires_strength
            if prompt_text(stage.hires) != prompt_text(d):
                out["Hires prompt"] = prompt_text(stage.hires)
            break
    return out


def infotext(spec: GenerateSpec, index: int) -> str | None:
    """Image `index`'s A1111 infotext, or None for a job without a diffusion stage (an upscale)."""
    found = main_diffusion(spec)
    pairs = parameters(spec, index)
    if found is None or pairs is None:
        return None
    d = found[0]
    lines = [prompt_text(d)]
    if d.negative_prompts:
        lines.append(f"Negative prompt: {negative_text(d)}")
    lines.append(", ".join(f"{k}: {_quote(v)}" for k, v in pairs.items()))
    return "\n".join(lines)


def _quote(value: Any) -> str:
    text = f"{value:g}" if isinstance(value, float) else str(value)
    if "," in text or "\n" in text or ":" in text:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        return text[1:-1].replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\")
    return text


def parse(text: str) -> dict[str, Any]:
    """An infotext as A1111's png-info parses it: Prompt, Negative prompt and each pair;
    `Size: WxH` also as Size-1 and Size-2 (and likewise every `...: WxH` pair)."""
    lines = text.strip().split("\n")
    last = lines[-1] if lines else ""
    pairs = _PAIR.findall(last)
    if len(pairs) < 3:  # the last line is prompt text, not parameters
        pairs = []
    else:
        lines = lines[:-1]
    prompt: list[str] = []
    negative: list[str] = []
    current = prompt
    for line in lines:
        if line.startswith("Negative prompt:"):
            current = negative
            line = line[len("Negative prompt:"):].strip()
        current.append(line)
    out: dict[str, Any] = {"Prompt": "\n".join(prompt), "Negative prompt": "\n".join(negative)}
    for key, raw in pairs:
        value = _unquote(raw.strip())
        size = _SIZE.match(value)
        if size:
            out[f"{key}-1"], out[f"{key}-2"] = int(size.group(1)), int(size.group(2))
        out[key] = value
    return out
