"""The dialect benchmark runs end to end with tiny counts and writes a well-formed section (never timed)."""

from __future__ import annotations

from pathlib import Path

from bench import dialects, server
from tests.bench.test_bench_smoke import model as model  # the fixture
from tests.bench.test_bench_smoke import tables, written


def test_a1111_and_eks_beside_stability(model: server.BenchModel, tmp_path: Path) -> None:
    cfg = dialects.DialectConfig(size=64, steps=10, concurrencies=(1, 2), requests=2, rounds=1, warmup=1)
    section = dialects.run(model, tmp_path, config=cfg, server_env={"DIFFUSIOND_TORCH_THREADS": "1"})
    text = written(section, tmp_path)
    [table] = tables(text)
    assert table[0] == list(dialects.COLUMNS)
    rows = table[1:]
    assert [(r[0], r[1]) for r in rows] == [(dialects.LABELS[c], str(n)) for n in (1, 2) for c in dialects.CLIENTS]
    assert all(r[3] == "0" for r in rows), "no request may fail"
    assert [r[6] for r in rows if r[0] == dialects.LABELS["stability"]] == ["1.00x", "1.00x"]
    assert sum("at most 5% slower" in n for n in section.notes) == 4
