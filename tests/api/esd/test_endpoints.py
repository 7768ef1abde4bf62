"""Endpoints are worker pools: spawned processes per endpoint, ready before InService, two serving at
once, each claiming only its own jobs, GPU profiles checked, and deletes that let running jobs finish."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from diffusiond.domain.jobs import JobStatus
from diffusiond.domain.params import Diffusion, GenerateSpec, Txt2Img, WeightedPrompt
from diffusiond.services import Services
from tests.api.esd.conftest import Esd, start_esd_server
from tests.conftest import LiveServer

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, tiny_sd_dir: Path) -> Iterator[LiveServer]:
    # one claim per worker (no batching), and a table entry that needs GPUs this machine lacks
    server = start_esd_server(tmp_path_factory.mktemp("esd-endpoints"), tiny_sd_dir, DIFFUSIOND_BATCH_SIZE="1",
                              DIFFUSIOND_INSTANCE_TYPES='{"ml.p4d.24xlarge": {"gpus": 8, "precision": "bf16"}}')
    yield server
    server.stop()


@pytest.fixture(scope="module")
def services(live: LiveServer) -> Iterator[Services]:
    services = live.services()
    yield services
    services.db.dispose()


@pytest.fixture(scope="module")
def client(live: LiveServer, services: Services) -> Esd:
    return Esd(live, services.keys.create("pools", credits_milli=1_000_000).key)


def workers(live: LiveServer) -> int:
    """The server's spawned children running a worker (not forks: `spawn_main` fresh interpreters)."""
    assert live.proc is not None
    count = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        count += ppid == live.proc.pid and b"spawn_main" in cmdline
    return count


def txt2img(client: Esd, endpoint: str, steps: int = 2, batch: int = 1) -> dict[str, object]:
    r = client.post("inference/run-sagemaker-inference", {
        "sagemaker_endpoint": endpoint, "task_type": "txt2img", "prompt": "a blue square", "steps": steps,
        "width": 64, "height": 64, "batch_size": batch, "seed": 5, "sampler_index": "Euler"})
    assert r.status_code == 200, r.text
    return dict(r.json())


def deploy(client: Esd, name: str, count: int, instance: str = "ml.g5.xlarge") -> None:
    r = client.post("inference/deploy-sagemaker-endpoint", {"instance_type": instance, "initial_instance_count": count,
                                                             "endpoint_name": name, "autoscaling_enabled": False})
    assert r.status_code == 200 and r.json() == 0, r.text
    assert r.headers["X-Endpoint-Name"] == name


def wait(predicate: object, timeout: float = 120, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def test_two_endpoints_serve_at_once_each_on_its_own_workers(live: LiveServer, client: Esd,
                                                             services: Services) -> None:
    deploy(client, "pool-a", 2)
    deploy(client, "pool-b", 1)
    item = client.get("inference/get-endpoint-deployment-job", jobID="pool-a").json()
    assert item["endpoint_status"] == "Creating" and item["status"] == "inprogress", item
    assert "endTime" not in item, item
    r = client.post("inference/deploy-sagemaker-endpoint", {"instance_type": "ml.g5.xlarge",
                                                            "initial_instance_count": 1, "endpoint_name": "pool-a"})
    assert r.status_code == 409 and "detail" in r.json()
    a, b = client.wait_endpoint("pool-a"), client.wait_endpoint("pool-b")
    assert (a["endpoint_status"], a["status"], a["current_instance_count"]) == ("InService", "success", 2)
    assert (b["endpoint_status"], b["current_instance_count"]) == ("InService", 1)
    assert a["endTime"] >= a["startTime"] and len(a["startTime"]) == 26  # 2023-07-04 08:00:35.171309
    assert workers(live) == 3
    # A job queued for an endpoint nobody runs waits: workers claim only their own endpoint's jobs
    tenant = services.keys.authenticate(client.key).tenant_id
    d = Diffusion(model="tiny", prompts=(WeightedPrompt("x"),), width=64, height=64, steps=2)
    stray = services.jobs.submit(tenant, GenerateSpec(stages=(Txt2Img(d),)), dialect="esd", endpoint="no-such-pool")
    started = [txt2img(client, name) for name in ("pool-a", "pool-b", "pool-a", "pool-b")]
    assert [s["endpoint_name"] for s in started] == ["pool-a", "pool-b", "pool-a", "pool-b"]
    done = [client.wait_job(str(s["inference_id"])) for s in started]
    assert [d["status"] for d in done] == ["succeed"] * 4
    assert [d["endpoint_name"] for d in done] == ["pool-a", "pool-b", "pool-a", "pool-b"]
    assert services.jobs.get(None, stray.id).status is JobStatus.QUEUED


def test_an_instance_type_needing_missing_gpus_fails_clearly(client: Esd) -> None:
    deploy(client, "big-gpus", 1, instance="ml.p4d.24xlarge")
    item = client.wait_endpoint("big-gpus")
    assert (item["endpoint_status"], item["status"]) == ("Failed", "failed")
    assert "needs 8 GPU(s)" in item["error"] and "this machine has 0" in item["error"]
    r = client.post("inference/deploy-sagemaker-endpoint", {"instance_type": "ml.nope", "initial_instance_count": 1})
    assert r.status_code == 400 and "ml.nope" in r.json()["detail"]
    r = client.post("inference/deploy-sagemaker-endpoint", {"instance_type": "ml.g5.xlarge",
                                                            "initial_instance_count": 1, "endpoint_name": "a+b"})
    assert r.status_code == 400


def test_inference_is_refused_unless_in_service(client: Esd) -> None:
    deploy(client, "pool-c", 1)
    r = txt2img(client, "pool-c")
    assert r["status"] == "failure" and "Creating, not InService" in str(r["error"])
    for name in ("no-such-endpoint", "big-gpus"):  # unknown, and failed
        r = txt2img(client, name)
        assert r["status"] == "failure" and "not found" in str(r["error"]) and r["inference_id"]
    # deleting while its worker is still starting: it goes at once
    assert client.post("inference/delete-sagemaker-endpoint", {"delete_endpoint_list": ["pool-c"]}).json() == 0
    wait(lambda: client.get("inference/get-endpoint-deployment-job", jobID="pool-c").json()["status"] == "deleted",
         what="pool-c deleted")


def test_delete_lets_running_jobs_finish_fails_queued_ones_and_stops_workers(
        live: LiveServer, client: Esd, services: Services) -> None:
    if client.wait_endpoint("pool-a")["endpoint_status"] != "InService":
        pytest.skip("pool-a is not in service")
    wait(lambda: workers(live) == 3, what="pool-c's worker to stop")
    long = [txt2img(client, "pool-a", steps=60, batch=2) for _ in range(2)]  # one per worker
    wait(lambda: all(services.jobs.get(None, str(j["inference_id"])).status is JobStatus.RUNNING for j in long),
         what="both workers running")
    queued = txt2img(client, "pool-a")
    assert services.jobs.get(None, str(queued["inference_id"])).status is JobStatus.QUEUED
    r = client.post("inference/delete-sagemaker-endpoint", {"delete_endpoint_list": ["pool-a+InService+N/A"]})
    assert r.status_code == 200 and r.json() == 0  # the client's `name+status+time` is cut at the `+`
    failed = client.wait_job(str(queued["inference_id"]), timeout=30)
    assert failed["status"] == "failed" and "deleted" in failed["error"]
    assert txt2img(client, "pool-a")["status"] == "failure"  # no new work
    finished = [client.wait_job(str(j["inference_id"])) for j in long]
    assert [f["status"] for f in finished] == ["succeed", "succeed"]
    wait(lambda: client.get("inference/get-endpoint-deployment-job", jobID="pool-a").json()["status"] == "deleted",
         what="pool-a deleted")
    wait(lambda: workers(live) == 1, what="pool-a's workers to exit")  # pool-b's stays
    assert client.wait_endpoint("pool-b")["endpoint_status"] == "InService"
    r = client.post("inference/delete-sagemaker-endpoint", {"delete_endpoint_list": ["pool-a", "never-was"]})
    assert r.status_code == 404 and "never-was" in r.json()["detail"]
    listed = client.get("inference/list-endpoint-deployment-jobs").json()
    assert {j["endpoint_name"]: j["status"] for j in listed}["pool-a"] == "deleted"
