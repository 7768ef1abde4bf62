"""Property-based fuzzing of every operation in `/openapi.json` (schemathesis), against a real server
whose worker runs the tiny model.

Every dialect is mounted in the one app and documented in its one OpenAPI document, so a dialect
added later is fuzzed here without a change to this file (the test checks that every operation
in the document was exercised). The run is bounded: a fixed seed, `MAX_EXAMPLES` cases per
operation and phase, one request at a time. The fuzzer's tenant has 0.02 credits and the model is
capped at 128x128, so the jobs it can afford take seconds; `SCHEMATHESIS_TOML` steers a share of the
generated sizes and engine ids to values that pass validation, so some jobs do run.

Checks: no 5xx; every status code, content type, header and body as the document declares them;
undeclared methods answer 405. Not checked: that schema-violating input is always refused and valid
input always accepted, since the dialects deliberately accept lax spellings (numbers as strings in
`/v1/jobs`, every form field a string) and refuse what the document cannot express (sizes a model
family does not take, unknown model names).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from diffusiond.domain.jobs import JobStatus
from diffusiond.domain.models import ModelKind
from diffusiond.store.tables import JobRow
from tests.conftest import LiveServer, free_port, prepare_home

SEED = 14
MAX_EXAMPLES = 50
CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,"
          "response_headers_conformance,unsupported_method")
SCHEMATHESIS_TOML = """
[dictionaries.engines]
values = ["tiny", "lanczos", "stable-diffusion-v1-5", "esrgan-v1-x2plus"]
[dictionaries.sides]
values = [64]
[dictionaries.steps]
values = [2, 10]

[parameters]
"path.engine_id" = { dictionary = "engines", probability = 0.9 }
"body.width" = { dictionary = "sides", probability = 0.6 }
"body.height" = { dictionary = "sides", probability = 0.6 }
"body.steps" = { dictionary = "steps", probability = 0.6 }
"body.stages[*].diffusion.width" = { dictionary = "sides", probability = 0.6 }
"body.stages[*].diffusion.height" = { dictionary = "sides", probability = 0.6 }
"body.stages[*].diffusion.steps" = { dictionary = "steps", probability = 0.6 }
"""


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory, tiny_sd_dir: Path) -> Iterator[LiveServer]:
    home = tmp_path_factory.mktemp("fuzz")
    prepare_home(home, tiny_sd_dir)
    view = LiveServer(home=home, port=0).services()
    view.models.add(tiny_sd_dir, "tiny", ModelKind.CHECKPOINT, family="tiny-128", replace=True)
    view.db.dispose()
    live = LiveServer(home=home, port=free_port(), env={
        "DIFFUSIOND_DEFAULT_MODEL": "tiny", "DIFFUSIOND_WORKERS": "1", "OMP_NUM_THREADS": "1",
        # the fuzzer is one client sending as fast as it can: its 429s would only hide other answers
        "DIFFUSIOND_RATE_LIMIT_PER_SECOND": "1000", "DIFFUSIOND_RATE_LIMIT_BURST": "1000",
        # the AWS-extension API deploys endpoints: at most one spawned worker on this shared machine
        "DIFFUSIOND_MAX_ENDPOINT_WORKERS": "1"})
    live.start()
    yield live
    live.stop()


def test_fuzz_every_operation_of_every_dialect(fuzz_server: LiveServer, tmp_path: Path) -> None:
    view = fuzz_server.services()
    created = view.keys.create("fuzz", credits_milli=20)
    config = tmp_path / "schemathesis.toml"
    config.write_text(SCHEMATHESIS_TOML)
    report = tmp_path / "report.json"
    st = Path(sys.executable).parent / "st"
    cmd = [str(st), "--no-color", "--config-file", str(config), "run", f"{fuzz_server.url}/openapi.json",
           "-H", f"Authorization: Bearer {created.key}", "--checks", CHECKS, "--seed", str(SEED),
           "--max-examples", str(MAX_EXAMPLES), "--workers", "1", "--request-timeout", "120",
           "--generation-database", "none", "--report", "json", "--report-json-path", str(report)]
    try:
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=480, cwd=tmp_path)
        assert report.exists(), run.stdout[-4000:] + run.stderr[-4000:]
        result = json.loads(report.read_text())
        cases, seconds = result["test_cases"]["generated"], result["running_time"]
        print(f"schemathesis {result['schemathesis_version']}: {cases} test cases, "
              f"{result['operations']['tested']} operations, {seconds:.0f} s")
        assert run.returncode == 0, run.stdout[-8000:]
        declared = sum(1 for item in httpx.get(f"{fuzz_server.url}/openapi.json").json()["paths"].values()
                       for method in item if method in ("get", "put", "post", "delete", "patch"))
        assert result["operations"]["tested"] == declared == result["operations"]["total"]
        with view.db.read() as s:  # soft-deleted ones too: the fuzzer's DELETEs hide custom-model predictions
            statuses = list(s.scalars(select(JobRow.status).where(JobRow.tenant_id == created.tenant_id)))
        print("jobs the fuzzer made:", sorted(Counter(statuses).items()))
        assert JobStatus.SUCCEEDED.value in statuses, "no generated job ran on the worker"
    finally:
        view.db.dispose()
