"""DIFFUSIOND_ANONYMOUS_TENANT: requests without a key act as that tenant (off by default)."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.conftest import LiveServer, free_port


def test_requests_without_a_key_act_as_the_configured_tenant(tmp_path: Path) -> None:
    live = LiveServer(home=tmp_path, port=free_port(),
                      env={"DIFFUSIOND_ANONYMOUS_TENANT": "solo", "DIFFUSIOND_EXECUTOR": "none"})
    live.start()
    try:
        account = httpx.get(live.url + "/v1/user/account").json()
        assert account["id"] == "solo"
        assert httpx.get(live.url + "/sdapi/v1/options").status_code == 200
        # a key that is presented must still be right, and keys still name their own tenant
        assert httpx.get(live.url + "/v1/user/account", headers={"x-api-key": "sk-wrong"}).status_code == 401
        assert httpx.get(live.url + "/v1/user/account", headers={"x-api-key": live.key}).json()["id"] != "solo"
    finally:
        live.stop()
