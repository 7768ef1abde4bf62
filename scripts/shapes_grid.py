"""Render a (prompt x seed) grid with the bundled `shapes` model and print measured pass rates.

    .venv/bin/python scripts/shapes_grid.py                       # writes docs/shapes_grid.png
    .venv/bin/python scripts/shapes_grid.py --model DIR --seeds 2 --out /tmp/grid.png

Every ordered (shape colour, background colour) pair of the palette is prompted once, with the shape,
size and position cycling, so colour following is measured across the whole palette.
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path
from typing import Any

import torch
from diffusers import DPMSolverMultistepScheduler, EulerDiscreteScheduler, StableDiffusionPipeline
from PIL import Image, ImageDraw

from diffusiond.engine.training.shapes_dataset import COLORS, ShapeLabel, full_caption, labels_for_pairs
from diffusiond.testing.shapes_checks import ShapeReading, read_image

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "src" / "diffusiond" / "bundled" / "shapes"
DOCS = ROOT / "docs"
SAMPLERS = {"euler": EulerDiscreteScheduler, "dpmpp": DPMSolverMultistepScheduler}


def evaluation_labels(limit: int | None = None) -> list[ShapeLabel]:
    """Every ordered colour pair once, shape/size/position cycling so each appears evenly."""
    labels = labels_for_pairs(list(itertools.permutations(COLORS, 2)))
    return labels[:limit] if limit else labels


def generate(pipe: Any, prompts: list[str], seeds: list[int], *, steps: int, cfg: float,
             size: int = 64, chunk: int = 24) -> list[Image.Image]:
    """One image per (prompt, seed) pair, batched; seeds drive per-image CPU generators."""
    images: list[Image.Image] = []
    for start in range(0, len(prompts), chunk):
        batch_prompts, batch_seeds = prompts[start : start + chunk], seeds[start : start + chunk]
        out = pipe(batch_prompts, generator=[torch.Generator().manual_seed(s) for s in batch_seeds],
                   num_inference_steps=steps, guidance_scale=cfg, height=size, width=size)
        images.extend(out.images)
    return images


def score(label: ShapeLabel, reading: ShapeReading) -> dict[str, bool]:
    """Which attributes of `label` the image shows."""
    return {
        "colors": reading.color == label.color and reading.background == label.background,
        "shape": reading.shape == label.shape,
        "position": reading.position == label.position,
        "size": reading.size == label.size,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=BUNDLED)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--limit", type=int, default=None, help="only the first N prompts")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--cfg", type=float, default=5.0)  # the recommended default
    parser.add_argument("--sampler", choices=sorted(SAMPLERS), default="euler")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--out", type=Path, default=DOCS / "shapes_grid.png")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    loader: Any = StableDiffusionPipeline  # diffusers is untyped
    pipe = loader.from_pretrained(args.model, local_files_only=True)
    pipe.scheduler = SAMPLERS[args.sampler].from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    # One image on its own, after a warm-up call: the latency a single request sees.
    generate(pipe, ["a red circle"], [0], steps=args.steps, cfg=args.cfg, size=args.size)
    single = time.perf_counter()
    generate(pipe, ["a small red circle on the left on a blue background"], [0], steps=args.steps,
             cfg=args.cfg, size=args.size)
    print(f"one {args.size}x{args.size} image, {args.steps} steps: {time.perf_counter() - single:.3f} s "
          f"({args.threads} thread(s))")
    labels = evaluation_labels(args.limit)
    jobs = [(label, seed) for label in labels for seed in range(args.seeds)]

    started = time.perf_counter()
    images = generate(pipe, [full_caption(lb) for lb, _ in jobs], [s for _, s in jobs], steps=args.steps,
                      cfg=args.cfg, size=args.size)
    elapsed = time.perf_counter() - started

    totals = dict.fromkeys(("colors", "shape", "position", "size"), 0)
    for (label, _), image in zip(jobs, images, strict=True):
        for key, ok in score(label, read_image(image)).items():
            totals[key] += ok
    print(f"{len(jobs)} images ({len(labels)} prompts x {args.seeds} seeds), {args.sampler}, "
          f"{args.steps} steps, cfg {args.cfg}, {args.size}px: {elapsed / len(jobs):.3f} s/image batched")
    for key, count in totals.items():
        print(f"  {key:<9} {count / len(jobs):6.1%}  ({count}/{len(jobs)})")

    # The grid: one row per seed, up to 30 prompts per row block, with the prompt index on top.
    cols = min(30, len(labels))
    cell = args.size
    rows = -(-len(labels) // cols) * args.seeds
    grid = Image.new("RGB", (cols * cell, rows * cell), "gray")
    for i, image in enumerate(images):
        prompt_index, seed = divmod(i, args.seeds)
        block, col = divmod(prompt_index, cols)
        grid.paste(image, (col * cell, (block * args.seeds + seed) * cell))
    ImageDraw.Draw(grid)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    grid.save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
