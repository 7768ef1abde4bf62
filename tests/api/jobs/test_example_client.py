"""The README's client script, run as a user runs it, against a live server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from PIL import Image

from tests.api.jobs.conftest import KeyFactory
from tests.conftest import REPO, LiveServer


def test_jobs_client_example(work_server: LiveServer, work_key: KeyFactory, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run = subprocess.run(
        [sys.executable, str(REPO / "examples" / "jobs_client.py"), "--url", work_server.url, "--key", work_key(),
         "--model", "tiny", "--size", "64", "--out", str(out), "--timeout", "120"],
        capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "webhook" in run.stdout and "job.succeeded" in run.stdout and "RUNNING" in run.stdout
    (saved,) = out.iterdir()
    assert Image.open(saved).size == (128, 128)
