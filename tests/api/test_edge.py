"""The edge (api/edge.py) against a real server: hostile bodies get a 4xx in the dialect's error shape,
cost the server no memory, and every response carries a request id.

The large bodies are 300 MB, streamed a MiB at a time until the server answers; the server's peak
resident set (VmHWM, reset before each case) is read from /proc. Before the edge, a 300 MB JSON body
raised the peak by about 900 MB, with or without a key, and the multipart routes read (and spooled)
all of it before refusing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import APIRouter
from fastapi.testclient import TestClient

from diffusiond.api.errors import dialect_route
from diffusiond.api.jobs.render import render_error
from diffusiond.app import create_app
from diffusiond.config import Settings
from tests.api.jobs.conftest import KeyFactory, png_bytes
from tests.api.rawhttp import memory_kib, repeat, reset_peak, stream_request
from tests.conftest import LiveServer

MB = 1 << 20
HOSTILE = 300 * MB
B = "hostileboundary"
T2I = "/v1/generation/tiny/text-to-image"
I2I = "/v1/generation/tiny/image-to-image"


def stability_error(r: httpx.Response, status: int, name: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body: dict[str, Any] = r.json()
    assert set(body) == {"id", "name", "message"} and body["id"] == r.headers["x-request-id"], body
    assert name is None or body["name"] == name, body
    return body


def jobs_error(r: httpx.Response, status: int, reason: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body: dict[str, Any] = r.json()
    assert set(body) == {"code", "message", "details"} and isinstance(body["code"], int), body
    detail = body["details"][0]
    assert detail["@type"].endswith("ErrorInfo") and detail["metadata"]["requestId"] == r.headers["x-request-id"]
    assert reason is None or detail["reason"] == reason, body
    return body


def generic_error(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    assert r.json() == {"error": {"code": code, "message": r.json()["error"]["message"],
                                  "requestId": r.headers["x-request-id"]}}


def file_part(name: str, data: bytes, filename: str = "x.png") -> bytes:
    return (f'--{B}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
            f"Content-Type: image/png\r\n\r\n").encode() + data + b"\r\n"


def field_part(name: str, value: str | bytes) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return f'--{B}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode() + data + b"\r\n"


def form(*parts: bytes, close: bool = True) -> bytes:
    return b"".join(parts) + (f"--{B}--\r\n".encode() if close else b"")


MULTIPART = {"Content-Type": f"multipart/form-data; boundary={B}"}


# ---- large bodies --------------------------------------------------------------------------------

# (case, method, path, headers, head, tail, keyed, chunked, status, shape, limit the server reads to)
BIG_CASES = [
    ("stability json, declared", "POST", T2I, {"Content-Type": "application/json"}, b'{"text_prompts":[{"text":"',
     b'"}]}', True, False, 400, "stability", 0),
    ("stability json, chunked", "POST", T2I, {"Content-Type": "application/json"}, b'{"text_prompts":[{"text":"',
     b'"}]}', True, True, 400, "stability", MB),
    ("stability json, no key", "POST", T2I, {"Content-Type": "application/json"}, b'{"text_prompts":[{"text":"',
     b'"}]}', False, True, 401, "stability", 0),
    ("admin credits", "POST", "/v1/admin/tenants/x/credits", {"Content-Type": "application/json"},
     b'{"credits": 1, "pad": "', b'"}', True, True, 413, "jobs", MB),
    ("jobs json, no key", "POST", "/v1/jobs", {"Content-Type": "application/json"}, b'{"requestId": "',
     b'"}', False, True, 401, "jobs", 0),
    ("stability multipart file", "POST", I2I, MULTIPART, file_part("init_image", b"")[:-2], b"\r\n--" + B.encode()
     + b"--\r\n", True, True, 400, "stability", 11 * MB),
    ("stability multipart, no key", "POST", I2I, MULTIPART, file_part("init_image", b"")[:-2], b"", False, True, 401,
     "stability", 0),
    ("stability multipart field", "POST", I2I, MULTIPART, field_part("text_prompts[0][text]", "")[:-2], b"", True,
     True, 400, "stability", 2 * MB),
    ("one-step upload", "POST", "/v1/resource/image/upload", MULTIPART, file_part("file", b"")[:-2], b"", True, True,
     413, "jobs", 11 * MB),
]


@pytest.mark.parametrize(("method", "path", "headers", "head", "tail", "keyed", "chunked", "status", "shape", "reads"),
                         [pytest.param(*c[1:], id=c[0]) for c in BIG_CASES])
def test_hostile_bodies_are_refused_early_and_cost_no_memory(
        edge_server: LiveServer, method: str, path: str, headers: dict[str, str], head: bytes, tail: bytes,
        keyed: bool, chunked: bool, status: int, shape: str, reads: int) -> None:
    assert edge_server.proc is not None
    pid = edge_server.proc.pid
    sent_headers = {**headers, **({"Authorization": f"Bearer {edge_server.key}"} if keyed else {})}
    if not chunked:
        sent_headers["Content-Length"] = str(len(head) + HOSTILE + len(tail))
    reset_peak(pid)
    before = memory_kib(pid)["VmRSS"]
    r = stream_request(edge_server.port, method, path, sent_headers, repeat(b"a" * MB, HOSTILE, head, tail),
                       chunked=chunked)
    growth_mib = (memory_kib(pid)["VmHWM"] - before) / 1024
    print(f"{path}: {r.status} after {r.sent / MB:.0f} MiB sent; peak RSS +{growth_mib:.1f} MiB")
    response = httpx.Response(r.status, headers=r.headers, content=r.body)
    (stability_error if shape == "stability" else jobs_error)(response, status)
    # The answer came once the server had read its limit (socket buffers hold some more in flight).
    assert r.sent <= reads + 24 * MB, f"the server answered after {r.sent / MB:.0f} MiB"
    assert growth_mib < 48, f"the server's peak resident set grew by {growth_mib:.0f} MiB"


def test_signed_upload_url_reads_at_most_an_image(edge_server: LiveServer) -> None:
    url = edge_server.client().post("/v1/resource/image").json()["putUrl"]
    path = url.split(str(edge_server.port), 1)[1]
    r = stream_request(edge_server.port, "PUT", path, {"Content-Type": "image/png"},
                       repeat(b"a" * MB, HOSTILE), chunked=True)
    assert r.status == 413 and r.sent <= 11 * MB + 24 * MB, (r.status, r.sent)


# ---- malformed bodies ----------------------------------------------------------------------------


def test_malformed_multipart_is_a_400_in_each_shape(edge_server: LiveServer) -> None:
    image = png_bytes()
    prompt = field_part("text_prompts[0][text]", "a red circle")
    cases: list[tuple[str, dict[str, str], bytes, str]] = [
        ("too many files", MULTIPART, form(prompt, *(file_part("init_image", image) for _ in range(3))),
         "invalid_multipart"),
        ("too many fields", MULTIPART, form(*(field_part(f"f{i}", "x") for i in range(201))), "invalid_multipart"),
        ("a 1 MB text field", MULTIPART, form(field_part("text_prompts[0][text]", "x" * MB)), "invalid_file_size"),
        ("another boundary", MULTIPART, form(prompt).replace(B.encode(), b"otherboundary"), "invalid_multipart"),
        ("no boundary", {"Content-Type": "multipart/form-data"}, form(prompt), "invalid_multipart"),
        ("no closing boundary", MULTIPART, form(prompt, file_part("init_image", image), close=False),
         "invalid_multipart"),
        ("a part without a name", MULTIPART, form(b"--" + B.encode() + b"\r\nContent-Type: text/plain\r\n\r\nx\r\n"),
         "invalid_multipart"),
    ]
    with edge_server.client() as c:
        for case, headers, data, name in cases:
            stability_error(c.post(I2I, content=data, headers=headers), 400, name)
            status = 413 if name == "invalid_file_size" else 400
            jobs_error(c.post("/v1/resource/image/upload", content=data, headers=headers), status, name)
            print(case, "refused")


@pytest.mark.parametrize("path", [T2I, "/v1/jobs", "/v1/jobs/credits", "/v1/admin/tenants/x/credits"])
def test_non_utf8_and_malformed_json_are_400(edge_server: LiveServer, path: str) -> None:
    error = stability_error if path.startswith("/v1/generation") else jobs_error
    with edge_server.client() as c:
        for data in (b'{"text_prompts": [{"text": "\xff\xfe\xfa"}]}', b"\xff\xfe{\x00", b'{"credits": 1,',
                     b"\x00" * 64):
            error(c.post(path, content=data, headers={"Content-Type": "application/json"}), 400)


@pytest.mark.parametrize("path", [T2I, "/v1/jobs", "/v1/admin/tenants/x/credits"])
def test_deeply_nested_json_is_refused_before_parsing(edge_server: LiveServer, path: str) -> None:
    error = stability_error if path.startswith("/v1/generation") else jobs_error
    deep = "[" * 1000 + "]" * 1000
    wrapped = '{"text_prompts": [{"text": "x", "weight": ' + "[" * 100 + "1" + "]" * 100 + "}]}"
    with edge_server.client() as c:
        for data in (deep, wrapped, '{"a": "' + "[" * 5000 + '"}'):
            r = c.post(path, content=data, headers={"Content-Type": "application/json"})
            error(r, 400)
        assert "nested deeper than 64" in error(c.post(path, content=deep), 400)["message"]
        # Brackets inside strings are not nesting, escaped quotes do not end a string.
        inside = '{"requestId": "' + '\\"[' * 100 + '", "stages": []}'
        assert "nested" not in str(c.post(path, content=inside).json())
    with httpx.Client(base_url=edge_server.url) as anonymous:
        error(anonymous.post(path, content=deep), 401)


# ---- routing, errors, request ids ---------------------------------------------------------------


def test_unknown_paths_and_methods_answer_in_the_prefixes_shape(edge_server: LiveServer) -> None:
    with edge_server.client() as c:
        stability_error(c.get("/v1/generation/tiny/nothing-here"), 404, "not_found")
        stability_error(c.get("/v1/engines"), 404, "not_found")
        jobs_error(c.get("/v1/jobs/a/b/c"), 404, "not_found")
        jobs_error(c.post("/v1/admin/nothing", json={}), 404, "not_found")
        generic_error(c.get("/nothing"), 404, "not_found")
        generic_error(c.get("/v1/nothing"), 404, "not_found")
        r = c.delete("/v1/user/balance")
        stability_error(r, 405, "method_not_allowed")
        assert r.headers["allow"] == "GET"
        jobs_error(c.patch("/v1/jobs"), 405, "method_not_allowed")


def test_every_response_has_a_request_id(edge_server: LiveServer) -> None:
    with edge_server.client() as c:
        ids = {c.get("/healthz").headers["x-request-id"], c.get("/v1/user/balance").headers["x-request-id"],
               c.get("/nothing").headers["x-request-id"]}
        assert len(ids) == 3 and all(len(i) == 32 for i in ids)
        assert c.get("/healthz", headers={"x-request-id": "lb-1234.5"}).headers["x-request-id"] == "lb-1234.5"
        assert c.get("/healthz", headers={"x-request-id": "no spaces\tor tabs"}).headers["x-request-id"] != "no spaces"


def test_an_unexpected_error_is_a_logged_500_in_the_dialects_shape(tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    app = create_app(Settings(home=tmp_path, executor="none"))
    defects = APIRouter(route_class=dialect_route(render_error))

    def defect() -> None:
        raise RuntimeError("a defect")

    defects.add_api_route("/v1/jobs/defect/now", defect)
    app.include_router(defects)
    app.add_api_route("/v1/resource/defect/now", defect)  # a plain route: the edge's own last resort
    with TestClient(app, raise_server_exceptions=False) as c, caplog.at_level(logging.ERROR):
        for path in ("/v1/jobs/defect/now", "/v1/resource/defect/now"):
            r = c.get(path)
            body = jobs_error(r, 500, "server_error")  # type: ignore[arg-type]
            assert "a defect" not in body["message"]
            assert any(r.headers["x-request-id"] in rec.getMessage() and rec.exc_info for rec in caplog.records)


def test_page_tokens_that_are_not_small_ascii_numbers_are_400(edge_server: LiveServer) -> None:
    with edge_server.client() as c:
        for token in ("99999999999999999999", "²", "٣", "-1", "1e3", " 1"):
            jobs_error(c.get("/v1/jobs", params={"pageToken": token}), 400)
        assert c.get("/v1/jobs", params={"pageToken": "0"}).status_code == 200


# ---- numbers and lists ----------------------------------------------------------------------------


def test_nan_and_infinity_are_refused_in_every_float(edge_server: LiveServer) -> None:
    bodies = [
        (T2I, '{"text_prompts": [{"text": "x", "weight": BAD}]}'),
        (T2I, '{"text_prompts": [{"text": "x"}], "cfg_scale": BAD}'),
        ("/v1/jobs/credits", '{"stages": [{"diffusion": {"prompts": [{"text": "x", "weight": BAD}]}}]}'),
        ("/v1/jobs/credits", '{"stages": [{"diffusion": {"prompts": "x", "cfgScale": BAD}}]}'),
        ("/v1/jobs/credits", '{"stages": [{"diffusion": {"prompts": "x", "lora": {"items": [{"loraModel": "x", '
                             '"weight": BAD}]}}}]}'),
        ("/v1/admin/tenants/x/credits", '{"credits": BAD}'),
    ]
    with edge_server.client() as c:
        for bad in ("NaN", "Infinity", "-Infinity", '"nan"', '"inf"', "1e999"):
            for path, template in bodies:
                error = stability_error if path == T2I else jobs_error
                error(c.post(path, content=template.replace("BAD", bad),
                             headers={"Content-Type": "application/json"}), 400)
        data = form(field_part("text_prompts[0][text]", "x"), field_part("text_prompts[0][weight]", "nan"),
                    file_part("init_image", png_bytes()))
        stability_error(c.post(I2I, content=data, headers=MULTIPART), 400)


def test_long_lists_are_refused_and_prompts_beyond_four_are_priced(edge_server: LiveServer) -> None:
    def stages(n: int) -> list[dict[str, Any]]:
        prompts = [{"text": f"shape {i}"} for i in range(n)]
        return [{"diffusion": {"prompts": prompts, "width": 64, "height": 64, "steps": 10, "sdModel": "tiny"}}]

    with edge_server.client() as c:
        stability_error(c.post(T2I, json={"text_prompts": [{"text": "x"}] * 400, "width": 64, "height": 64}), 400)
        jobs_error(c.post("/v1/jobs/credits", json={"stages": stages(400)}), 400)
        jobs_error(c.post("/v1/jobs/credits", json={"stages": stages(1) * 13}), 400)
        one, most = (c.post("/v1/jobs/credits", json={"stages": stages(n)}).json()["credits"] for n in (1, 32))
        assert most == pytest.approx(one + 0.028)  # 28 prompts beyond the first four, a millicredit each


# ---- signed URLs ---------------------------------------------------------------------------------


def test_signed_urls_answer_one_404_shape(edge_server: LiveServer, edge_key: KeyFactory) -> None:
    services = edge_server.services()
    try:
        mine = services.keys.authenticate(edge_server.key).tenant_id
        theirs = services.keys.authenticate(edge_key()).tenant_id
        key = f"outputs/{theirs}/x/0-0.png"
        services.blobs.put(key, png_bytes(), "image/png")
        good = services.signer.sign(key, theirs, 60)
        assert httpx.get(good).status_code == 200
        forged = good.replace(f"t={theirs}", f"t={mine}")
        gone = services.signer.sign(f"outputs/{theirs}/x/1-0.png", theirs, 60)
        for url in (good.replace("&s=", "&s=A"), good.replace("&s=", "&s=%C3%A9"), forged, gone,
                    services.signer.sign(key, theirs, -10)):
            body = jobs_error(httpx.get(url), 404, "not_found")
            assert body["message"] == "not found, or the link is invalid or expired"
    finally:
        services.db.dispose()
    with edge_server.client() as c:
        put = c.post("/v1/resource/image").json()["putUrl"]
    for bad in (put.replace("&s=", "&s=%C3%A9"), put.replace("&s=", "&s=\u0661")):
        jobs_error(httpx.put(bad, content=png_bytes(), headers={"Content-Type": "image/png"}), 401, "unauthorized")


# ---- rate limits ---------------------------------------------------------------------------------


@pytest.fixture
def slow_key(edge_server: LiveServer, edge_key: KeyFactory) -> Iterator[str]:
    """A key limited to one request every two seconds (after the burst of 50)."""
    from diffusiond.auth.keys import hash_key
    from diffusiond.store.tables import ApiKeyRow

    key = edge_key()
    services = edge_server.services()
    with services.db.session() as s:
        s.query(ApiKeyRow).filter(ApiKeyRow.key_hash == hash_key(key)).update({"rate_limit": 0.5, "rate_burst": 50})
    services.db.dispose()
    yield key


def test_429_says_when_to_retry_and_which_limit(edge_server: LiveServer, slow_key: str) -> None:
    with edge_server.client(slow_key) as c:
        codes = [c.get("/v1/user/balance").status_code for _ in range(50)]
        assert codes == [200] * 50
        r = c.get("/v1/user/balance")
        stability_error(r, 429, "rate_limited")
        assert r.headers["retry-after"] == "2"  # a token every 2 s, as integer seconds
        assert r.headers["ratelimit-policy"] == '"burst";q=50;w=100'
        assert r.headers["ratelimit"] == '"burst";r=0;t=2'
        r = c.get("/v1/jobs")
        jobs_error(r, 429, "rate_limited")
        assert int(r.headers["retry-after"]) >= 1


# ---- synchronous requests that give up ------------------------------------------------------------


def jobs_of(c: httpx.Client) -> list[dict[str, Any]]:
    jobs: list[dict[str, Any]] = c.get("/v1/jobs").json()["jobs"]
    return jobs


def test_a_sync_request_that_times_out_cancels_its_job_and_releases_credits(
        edge_server: LiveServer, edge_key: KeyFactory) -> None:
    with edge_server.client(edge_key(credits=5)) as c:
        r = c.post(T2I, json={"text_prompts": [{"text": "x"}], "width": 64, "height": 64, "steps": 10})
        assert "canceled" in stability_error(r, 504, "timeout")["message"]
        assert [j["status"] for j in jobs_of(c)] == ["CANCELED"] and jobs_of(c)[0]["credits"] == 0
        assert c.get("/v1/user/balance").json() == {"credits": 5.0}


def test_a_client_that_disconnects_cancels_its_job_and_releases_credits(
        edge_server: LiveServer, edge_key: KeyFactory) -> None:
    key = edge_key(credits=5)
    with edge_server.client(key) as c:
        with pytest.raises(httpx.ReadTimeout):
            c.post(T2I, json={"text_prompts": [{"text": "x"}], "width": 64, "height": 64, "steps": 10}, timeout=0.5)
        for _ in range(50):
            if [j["status"] for j in jobs_of(c)] == ["CANCELED"]:
                break
            time.sleep(0.1)
        assert [j["status"] for j in jobs_of(c)] == ["CANCELED"]
        assert c.get("/v1/user/balance").json() == {"credits": 5.0}
