"""The benchmark code runs end to end with tiny counts and writes well-formed sections (never timed).

One torch thread on both sides: on a shared, oversubscribed CPU, OpenMP's spinning makes two threads
many times slower than one.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import cold_start, control_plane, cpu_throughput, gpu_throughput, report, run_all, server, throughput


@pytest.fixture(scope="module")
def model(tiny_sd_dir: Path) -> server.BenchModel:
    return server.BenchModel(tiny_sd_dir, "bench", "tiny", "the tiny test model", False)


def written(section: report.Section, tmp_path: Path) -> str:
    out = tmp_path / "BENCHMARKS.md"
    report.write_section(section, out, "test machine")
    text = out.read_text()
    assert text.startswith(report.HEADER)
    assert f": {section.title}" in text
    for fact in ("- machine: test machine", "- command: `", "- model: "):
        assert fact in text
    return text


def tables(text: str) -> list[list[list[str]]]:
    """Every Markdown table in `text`, as rows of cells (header first, rule dropped)."""
    found: list[list[list[str]]] = []
    current: list[list[str]] = []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            if not set(line) <= {"|", "-"}:
                current.append([c.strip() for c in line.strip("|").split("|")])
        elif current:
            found.append(current)
            current = []
    return found


def test_cpu_throughput_writes_the_baseline_beside_each_row(model: server.BenchModel, tmp_path: Path) -> None:
    cfg = throughput.ThroughputConfig(sizes=(64,), steps=10, concurrencies=(1, 2), cell_seconds=0.0, min_images=2,
                                      max_images=2, warmup=1)
    text = written(cpu_throughput.run(model, tmp_path, config=cfg, label="smoke", threads=1), tmp_path)
    [table] = tables(text)
    assert table[0] == list(throughput.COLUMNS)
    rows = table[1:]
    assert len(rows) == 1 + 2 * 2  # the baseline, then each client at each concurrency
    assert rows[0][1] == "plain diffusers (baseline)" and rows[0][7] == "1.00x"
    assert all(r[4] == "0" for r in rows), "no request may fail"
    assert all(r[7].endswith("x") for r in rows)
    assert [r[2] for r in rows[1:]] == ["1", "2", "1", "2"]
    assert all(r[10] not in ("", "n/a") for r in rows[1:] if r[2] == "1"), "overhead at concurrency 1"
    # paired overhead at concurrency 1: the mean, the median and how many pairs
    paired = [r[11] for r in rows[1:] if r[2] == "1"]
    assert len(paired) == 2 and all(p.endswith("; 2 pairs)") for p in paired), paired
    assert all(r[11] == "" for r in rows if r[2] != "1")
    assert "(smoke)" in text and "target 1.0x baseline at concurrency 2" in text


def test_control_plane_measures_submit_and_get_beside_the_http_floor(model: server.BenchModel, tmp_path: Path) -> None:
    cfg = control_plane.ControlConfig(requests=12, concurrency=4, warmup=4, backends=("sqlite",),
                                      paced_rate=40.0, paced_requests=8)
    text = written(control_plane.run(model, tmp_path, config=cfg), tmp_path)
    [table] = tables(text)
    assert table[0] == list(control_plane.COLUMNS)
    assert [r[1] for r in table[1:]] == ["GET /healthz (baseline: HTTP floor)", "POST /v1/jobs", "GET /v1/jobs/{id}",
                                         "POST /v1/jobs (open loop)"]
    assert all(r[3] == "12" and r[4] == "0" for r in table[1:4])
    assert table[4][2] == "40/s paced" and table[4][3] == "8" and table[4][4] == "0"
    # 8 submits due 25 ms apart take at least 7 intervals of wall time
    assert float(table[4][5]) >= 7 / 40
    # server CPU per request: a number for every row (/proc counts 10 ms ticks, so 12 requests may read 0)
    assert all(float(r[10]) >= 0 for r in table[1:])
    assert "target submit p99 < 50 ms on sqlite, 4 in flight" in text
    assert "target submit p99 < 50 ms on sqlite, 40/s paced" in text


def test_cold_start_times_serve_to_first_image_and_the_baseline(model: server.BenchModel, tmp_path: Path) -> None:
    cfg = cold_start.ColdConfig(repeats=1, size=64, steps=10)
    text = written(cold_start.run(model, tmp_path, config=cfg, threads=1), tmp_path)
    [table] = tables(text)
    assert table[0] == list(cold_start.COLUMNS)
    assert len(table) == 4
    assert table[1][5] == "1.00x" and all(r[5].endswith("x") for r in table[1:])
    assert all(float(r[2]) > 0 for r in table[1:])


def test_gpu_benchmark_refuses_without_cuda_and_says_so(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(gpu_throughput.NoCuda, match="needs a CUDA device"):
        gpu_throughput.run(tmp_path)
    text = written(gpu_throughput.not_lent_section(), tmp_path)
    assert "no GPU machine was lent" in text


def test_run_all_rejects_unknown_benchmarks() -> None:
    assert run_all.selected("") == list(run_all.DEFAULT_BENCHMARKS)  # training runs only when named
    assert run_all.selected("cpu, cold") == ["cpu", "cold"]
    with pytest.raises(SystemExit, match="unknown"):
        run_all.selected("cpu,bogus")


def test_a_new_run_replaces_its_benchmarks_section_only(tmp_path: Path) -> None:
    out = tmp_path / "BENCHMARKS.md"
    for title, fact in (("Alpha", "first"), ("Beta", "only"), ("Alpha", "second")):
        section = report.Section(title=title, command="c", model="m", facts=[("run", fact)])
        report.write_section(section, out, "test machine")
    text = out.read_text()
    assert text.startswith(report.HEADER)
    assert text.count("UTC: Alpha") == 1 and "- run: second" in text and "- run: first" not in text
    assert text.index(": Alpha") < text.index(": Beta") and "- run: only" in text  # in place, not moved


def test_training_times_both_presets_beside_a_plain_loop(model: server.BenchModel, tmp_path: Path) -> None:
    from bench import training

    cfg = training.TrainBenchConfig(pictures=4, steps=2, resolution=64)
    text = written(training.run(model, tmp_path, config=cfg, threads=1), tmp_path)
    [table] = tables(text)
    assert table[0] == list(training.COLUMNS)
    assert [r[0] for r in table[1:]] == ["`fast` (strength 5)", "`high_quality` (strength 5)"]
    assert all(r[1] == "2 x 8" and r[6].endswith("x") and float(r[4]) > 0 and float(r[5]) > 0 for r in table[1:])
