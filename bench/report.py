"""Tables, machine descriptions and the dated BENCHMARKS.md sections every benchmark writes."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from diffusiond.machine import cpu_model, ram_gib

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = REPO / "BENCHMARKS.md"
HEADER = """# diffusiond benchmarks

Written by `make bench` (`python -m bench.run_all`); each section below is the latest run of one
benchmark, with the machine, the command, the model and the baseline measured in the same run. A new
run replaces its benchmark's section; earlier runs are in git history.
"""


@dataclass
class Table:
    """A Markdown table: printed to the terminal and written into a section as is."""

    columns: Sequence[str]
    rows: list[list[str]] = field(default_factory=list)

    def add(self, *cells: object) -> None:
        if len(cells) != len(self.columns):
            raise ValueError(f"a row of {len(cells)} cells for {len(self.columns)} columns")
        self.rows.append([str(c) for c in cells])

    def markdown(self) -> str:
        widths = [max(len(c), *(len(r[i]) for r in self.rows)) for i, c in enumerate(self.columns)]

        def line(cells: Sequence[str]) -> str:
            return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

        rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
        return "\n".join([line(self.columns), rule, *(line(r) for r in self.rows)])


@dataclass
class Section:
    """One benchmark's result: a title, facts about the run, tables and notes."""

    title: str
    command: str
    model: str
    facts: list[tuple[str, str]] = field(default_factory=list)
    tables: list[tuple[str, Table]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    label: str = ""  # e.g. "TRIAL, contaminated by concurrent load"
    slot: str = ""  # which benchmark's section this replaces in BENCHMARKS.md (default: the title)

    def markdown(self, machine: str, when: datetime | None = None) -> str:
        stamp = (when or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M UTC")
        title = f"## {stamp}: {self.title}" + (f" ({self.label})" if self.label else "")
        lines = [title, f"<!-- bench: {self.slot or self.title} -->", "", f"- machine: {machine}",
                 f"- command: `{self.command}`", f"- model: {self.model}"]
        lines += [f"- {k}: {v}" for k, v in self.facts]
        out = "\n".join(lines) + "\n"
        for caption, table in self.tables:
            out += "\n" + (f"{caption}\n\n" if caption else "") + table.markdown() + "\n"
        if self.notes:
            out += "\n" + "\n".join(f"- {n}" for n in self.notes) + "\n"
        return out


def write_section(section: Section, output: Path, machine: str | None = None) -> str:
    """Print the section and put it into `output` in place of that benchmark's last section (appended
    when it has none; the file is created with a header when missing)."""
    text = section.markdown(machine or machine_description())
    print("\n" + text, flush=True)
    document = output.read_text() if output.exists() else HEADER
    output.write_text(replace_section(document, section.slot or section.title, text))
    return text


def replace_section(document: str, slot: str, text: str) -> str:
    """`document` with the section marked `slot` replaced by `text` (or `text` appended)."""
    marker = f"<!-- bench: {slot} -->"
    parts = document.split("\n## ")
    for i, part in enumerate(parts[1:], start=1):
        if marker in part.split("\n", 2)[:2]:
            parts[i] = text.removeprefix("## ").rstrip("\n") + "\n"
            return "\n## ".join(parts)
    return document.rstrip("\n") + "\n\n" + text


# ---- the machine -------------------------------------------------------------------------------------


def git_commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + (" (uncommitted changes in tracked files)" if dirty else "")


def versions() -> str:
    import diffusers
    import torch

    return f"Python {platform.python_version()}, torch {torch.__version__}, diffusers {diffusers.__version__}"


def load_average() -> str:
    try:
        return ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def machine_description() -> str:
    cores = os.cpu_count() or 0
    return (f"{cpu_model()}, {cores} logical cores, {ram_gib():.1f} GiB RAM; {versions()}; "
            f"git {git_commit()}; load average at start {load_average()}")


def command_line() -> str:
    """How this run was started, as a user would type it."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    head = f"python -m {spec.name}" if spec is not None else Path(sys.argv[0]).name
    return " ".join([head, *sys.argv[1:]])


# ---- figures -----------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), linear between closest ranks; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def fmt(value: float, digits: int = 2) -> str:
    return "n/a" if value != value else f"{value:.{digits}f}"  # NaN != NaN


def ratio(value: float, base: float) -> str:
    if value != value or base != base or base == 0:
        return "n/a"
    return f"{value / base:.2f}x"
