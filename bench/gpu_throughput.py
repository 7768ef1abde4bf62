"""Benchmark 4: GPU. SD 1.5's real architecture (the configs shipped in `engine/configs/sd15`) with
random fp16 weights, 512x512, 20 steps, CFG 7, DPM++ 2M on both sides: plain diffusers batch-1
sequential vs diffusiond at concurrency 1, 8 and 16.

Random weights cost exactly what trained ones cost (same shapes, same kernels); the images are noise.
Share of the compute ceiling = images/s x 34.7 TFLOP per image / the GPU's dense fp16 peak.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.report import Section, Table, command_line, fmt
from bench.server import BenchModel
from bench.throughput import ThroughputConfig, ThroughputResult, measure, table, target_notes

FULL = ThroughputConfig(sizes=(512,), steps=20, concurrencies=(1, 8, 16), cell_seconds=20.0, min_images=16,
                        max_images=128, rounds=3, sampler="DPM++ 2M")
QUICK = ThroughputConfig(sizes=(512,), steps=20, concurrencies=(1, 8, 16), cell_seconds=5.0, min_images=4,
                         max_images=32, sampler="DPM++ 2M", warmup=1)
TFLOP_PER_IMAGE = 34.7  # one SD 1.5 image, 512x512, 20 steps, CFG (issue 5)
TARGET_RATIO = 2.0
# Dense fp16 tensor-core peaks (TFLOPS, no sparsity), by a substring of the device name; first match wins.
PEAK_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0), ("H200", 989.0), ("GH200", 989.0),
    ("B200", 2250.0), ("A100", 312.0), ("L40S", 362.0), ("L4", 121.0), ("A10", 125.0), ("RTX 4090", 165.0),
)
NO_CUDA = ("the GPU benchmark needs a CUDA device and a CUDA build of torch; torch.cuda.is_available() is False "
           "on this machine. Run it on a GPU machine: python -m bench.run_all --only gpu")


class NoCuda(SystemExit):
    """Raised (with a clear message) when the GPU benchmark is asked for on a machine without CUDA."""


def require_cuda() -> str:
    """The CUDA device's name, or NoCuda."""
    import torch

    if not torch.cuda.is_available():
        raise NoCuda(NO_CUDA)
    return str(torch.cuda.get_device_name(0))


def peak_tflops(device_name: str, given: float | None) -> tuple[float, str]:
    if given:
        return given, f"{given:g} TFLOPS dense fp16 (given with --gpu-peak-tflops)"
    for key, value in PEAK_TFLOPS:
        if key in device_name:
            return value, f"{value:g} TFLOPS dense fp16 ({key} datasheet, no sparsity)"
    return 989.0, f"989 TFLOPS dense fp16 (H100 SXM datasheet; {device_name} is not in the table)"


def build_random_sd15(folder: Path) -> Path:
    """SD 1.5 from the shipped configs, random weights, fp16, saved as a diffusers folder."""
    import importlib

    import torch
    import transformers

    from diffusiond.engine.loader import prepare_config_dir

    diffusers: Any = importlib.import_module("diffusers")  # partial type hints: treated as dynamic

    if (folder / "model_index.json").is_file():
        return folder
    config = prepare_config_dir("sd15", folder.parent / "sd15-configs")
    torch.manual_seed(0)
    with torch.device("cuda"):
        unet = diffusers.UNet2DConditionModel.from_config(diffusers.UNet2DConditionModel.load_config(config / "unet"))
        vae = diffusers.AutoencoderKL.from_config(diffusers.AutoencoderKL.load_config(config / "vae"))
        text_config = transformers.CLIPTextConfig.from_pretrained(str(config / "text_encoder"))
        text_encoder = transformers.CLIPTextModel(text_config)
    scheduler = diffusers.PNDMScheduler.from_config(diffusers.PNDMScheduler.load_config(config / "scheduler"))
    tokenizer = transformers.CLIPTokenizer.from_pretrained(str(config / "tokenizer"))
    pipe = diffusers.StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                             scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                             requires_safety_checker=False)
    pipe.to(torch.float16)
    pipe.save_pretrained(str(folder), safe_serialization=True)
    del pipe, unet, vae, text_encoder
    torch.cuda.empty_cache()
    return folder


class NvidiaSmiProbe:
    """Peak `memory.used` of GPU 0 (nvidia-smi, every 0.2 s) above its level at start: the whole
    process's footprint (CUDA context, allocator cache), for the baseline and the server alike."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_mib = 0
        self._peak_mib = 0

    @staticmethod
    def used_mib() -> int:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"],
                             capture_output=True, text=True, check=True).stdout
        return int(out.strip().splitlines()[0])

    def start(self) -> None:
        self._start_mib = self._peak_mib = self.used_mib()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(self.interval):
            self._peak_mib = max(self._peak_mib, self.used_mib())

    def stop(self) -> int:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return (self._peak_mib - self._start_mib) * 1024 * 1024


def ceiling_table(cfg: ThroughputConfig, res: ThroughputResult, peak: float) -> Table:
    t = Table(("client", "concurrency", "images/s", "TFLOPS achieved", "share of peak"))
    size = cfg.sizes[0]
    rows = [("plain diffusers (baseline)", 1, res.baseline[size].images_per_second)]
    rows += [(f"diffusiond, {api}", c, res.server[(size, api, c)].images_per_second)
             for api in cfg.apis for c in cfg.concurrencies]
    for client, c, ips in rows:
        t.add(client, c, fmt(ips, 3), fmt(ips * TFLOP_PER_IMAGE, 1), f"{fmt(100 * ips * TFLOP_PER_IMAGE / peak, 1)}%")
    return t


def run(work: Path, *, config: ThroughputConfig = FULL, server_env: Mapping[str, str] | None = None,
        label: str = "", peak: float | None = None) -> Section:
    """Refuses (NoCuda) on a machine without CUDA."""
    device_name = require_cuda()
    import torch

    peak_value, peak_text = peak_tflops(device_name, peak)
    folder = build_random_sd15(work / "sd15-random-fp16")
    model = BenchModel(folder, "bench-sd15", "sd15", "SD 1.5 architecture (shipped `engine/configs/sd15`), random "
                       "fp16 weights, 859.5M-parameter UNet", False)
    env = {"DIFFUSIOND_DEVICE": "cuda", **(server_env or {})}
    print(f"gpu throughput on {device_name}", flush=True)
    res = measure(model, config, work, server_env=env, device="cuda", fp16=True, memory_probe=NvidiaSmiProbe)
    section = Section(title="Server vs plain diffusers, GPU", command=command_line(), model=model.label, label=label)
    base = res.baseline[config.sizes[0]]
    section.facts += [
        ("GPU", f"{device_name}, {torch.cuda.get_device_properties(0).total_memory / 1024**3:.0f} GiB; CUDA "
                f"{torch.version.cuda}; compute ceiling {peak_text}; {TFLOP_PER_IMAGE} TFLOP per image"),
        ("settings", f"512x512 txt2img, {config.steps} steps, CFG {config.cfg_scale:g}, {config.sampler} on both "
                     "sides, one image per request"),
        ("baseline", "`StableDiffusionPipeline.from_pretrained(folder, dtype=float16)` on cuda, diffusers' default "
                     "attention (SDPA), batch 1, sequential, after a warm-up, PIL output"),
        ("diffusiond", f"`diffusiond serve` child process, server env "
                       f"{', '.join(f'{k}={v}' for k, v in sorted(env.items()))}"),
        ("requests", config.describe()),
        ("peak GPU memory", f"baseline {base.peak_memory_bytes / 1024**3:.2f} GiB allocated by torch, "
                            f"{res.baseline_peak_memory_bytes / 1024**3:.2f} GiB process footprint (nvidia-smi); "
                            f"diffusiond {res.server_peak_memory_bytes / 1024**3:.2f} GiB process footprint "
                            "(nvidia-smi, whole run)"),
    ]
    section.tables.append(("", table(config, res)))
    section.tables.append(("Share of the compute ceiling:", ceiling_table(config, res, peak_value)))
    section.notes += target_notes(config, res, min_ratio=TARGET_RATIO, max_overhead_ms=None)
    return section


def not_lent_section(label: str = "", reason: str = "") -> Section:
    """What BENCHMARKS.md says when the run had no GPU."""
    section = Section(title="Server vs plain diffusers, GPU: not measured", slot="Server vs plain diffusers, GPU",
                      command=command_line(),
                      model="SD 1.5 architecture, random fp16 weights (not built)", label=label)
    section.notes.append(reason or "no CUDA device on this machine (no GPU machine was lent to this run); "
                                   "`python -m bench.run_all --only gpu` measures it on a GPU machine")
    return section
