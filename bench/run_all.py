"""`make bench`: run the benchmarks, print their tables, and put each into BENCHMARKS.md in place of its last run.

    python -m bench.run_all [--quick] [--only cpu|control|cold|dialects|gpu|training[,...]] [--output PATH]
                            [--model-dir PATH] [--label TEXT] [--server-env KEY=VALUE ...]

The default run (cpu, control, cold; gpu when CUDA is present, else a section saying it was not
measured) takes about 10-15 minutes on a 2-core CPU with the bundled model; --quick about a third.
`training` (LoRA training against a plain diffusers + peft loop, about 15 minutes) runs only when named.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench import cold_start, control_plane, cpu_throughput, dialects, gpu_throughput, training
from bench.report import DEFAULT_OUTPUT, Section, machine_description, write_section
from bench.server import BenchModel, parse_env, resolve_model

BENCHMARKS = ("cpu", "control", "cold", "dialects", "gpu", "training")
DEFAULT_BENCHMARKS = ("cpu", "control", "cold", "dialects", "gpu")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run_all", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer requests and repeats (a check, not final figures)")
    p.add_argument("--sizes", default="", help="comma-separated image sides for the CPU benchmark (default 64,256)")
    p.add_argument("--only", default="", help="comma-separated subset of: " + ", ".join(BENCHMARKS))
    p.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="the Markdown file sections are appended to")
    p.add_argument("--model-dir", type=Path, default=None,
                   help="a diffusers folder to benchmark instead of the bundled model (or DIFFUSIOND_BENCH_MODEL_DIR)")
    p.add_argument("--label", default=os.environ.get("DIFFUSIOND_BENCH_LABEL", ""),
                   help="added to each section title, e.g. 'trial, machine under load'")
    p.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE",
                   help="extra environment for the diffusiond server (repeatable), e.g. DIFFUSIOND_WORKERS=2")
    p.add_argument("--torch-threads", type=int, default=None,
                   help="torch/OpenMP threads for the baseline and the server alike (default: torch's own)")
    p.add_argument("--pg-admin-url", default=control_plane.PG_ADMIN_URL,
                   help="PostgreSQL URL used to create and drop the throwaway database")
    p.add_argument("--gpu-peak-tflops", type=float, default=None, help="dense fp16 peak of the GPU (default: by name)")
    return p.parse_args(argv)


def selected(only: str) -> list[str]:
    names = [n.strip() for n in only.split(",") if n.strip()] or list(DEFAULT_BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        raise SystemExit(f"--only: unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    return names


def cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def exit_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so the server child is stopped and the temp folder removed."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    exit_on_sigterm()
    names = selected(args.only)
    explicit_gpu = "gpu" in [n.strip() for n in args.only.split(",")]
    env = parse_env(args.server_env)
    machine = machine_description()  # before any load of our own: the load average is the machine's
    print(f"machine: {machine}\noutput: {args.output}", flush=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="diffusiond-bench-") as tmp:
        work = Path(tmp)
        model = resolve_model(args.model_dir, work) if set(names) - {"gpu"} else None
        for name in names:
            section: Section
            if name == "gpu":
                if not cuda_available():
                    if explicit_gpu:
                        raise gpu_throughput.NoCuda(gpu_throughput.NO_CUDA)
                    section = gpu_throughput.not_lent_section(args.label)
                else:
                    cfg = gpu_throughput.QUICK if args.quick else gpu_throughput.FULL
                    section = gpu_throughput.run(work, config=cfg, server_env=env, label=args.label,
                                                 peak=args.gpu_peak_tflops)
            else:
                assert model is not None
                section = run_cpu_side(name, model, work, args, env)
            write_section(section, args.output, machine)
    print(f"done in {time.perf_counter() - started:.0f} s; sections appended to {args.output}", flush=True)
    return 0


def run_cpu_side(name: str, model: BenchModel, work: Path, args: argparse.Namespace,
                 env: dict[str, str]) -> Section:
    if name == "cpu":
        cfg = cpu_throughput.QUICK if args.quick else cpu_throughput.FULL
        if args.sizes:
            cfg = dataclasses.replace(cfg, sizes=tuple(int(x) for x in args.sizes.split(",")))
        return cpu_throughput.run(model, work, config=cfg, server_env=env, label=args.label,
                                  threads=args.torch_threads)
    if name == "training":
        return training.run(model, work, config=training.QUICK if args.quick else training.TrainBenchConfig(),
                            label=args.label, threads=args.torch_threads)
    if name == "dialects":
        return dialects.run(model, work, config=dialects.QUICK if args.quick else dialects.DialectConfig(),
                            server_env=env, label=args.label)
    if name == "control":
        base = control_plane.QUICK if args.quick else control_plane.ControlConfig()
        ctl = dataclasses.replace(base, pg_admin_url=args.pg_admin_url)
        return control_plane.run(model, work, config=ctl, server_env=env, label=args.label)
    cold = cold_start.QUICK if args.quick else cold_start.ColdConfig()
    return cold_start.run(model, work, config=cold, server_env=env, label=args.label, threads=args.torch_threads)


if __name__ == "__main__":
    raise SystemExit(main())
