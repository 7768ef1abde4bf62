"""The OpenAPI document describes the server: each operation's error answers in its dialect's shape,
no 422, and the bodies of the routes that read them by hand (uploads)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from diffusiond.app import create_app
from diffusiond.config import Settings

METHODS = ("get", "put", "post", "delete", "patch")


@pytest.fixture(scope="module")
def doc(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    home: Path = tmp_path_factory.mktemp("openapi")
    spec: dict[str, Any] = create_app(Settings(home=home, executor="none")).openapi()
    return spec


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(m.upper(), path, op) for path, item in doc["paths"].items() for m, op in item.items() if m in METHODS]


def error_model(op: dict[str, Any], status: str) -> str:
    ref: str = op["responses"][status]["content"]["application/json"]["schema"]["$ref"]
    return ref.rsplit("/", 1)[-1]


def test_no_operation_declares_the_never_sent_422(doc: dict[str, Any]) -> None:
    # a 422 a dialect really sends (the custom-model API's for an image too large, A1111's for a bad body)
    # is declared in its shape
    assert all(error_model(op, "422") in ("CustomError", "A1111Error")
               for _, _, op in operations(doc) if "422" in op["responses"])
    assert "HTTPValidationError" not in doc["components"]["schemas"]


def test_every_api_operation_declares_its_errors_in_its_dialects_shape(doc: dict[str, Any]) -> None:
    shapes = {"/v1/generation": "StabilityError", "/v1/engines": "StabilityError", "/v1/user": "StabilityError",
              "/v1/jobs": "ErrorBody", "/v1/resource": "ErrorBody", "/v1/admin": "ErrorBody",
              "/v1/account": "ErrorBody", "/v1/custom": "CustomError", "/sdapi/v1": "A1111Error",
              "/v1/uploads": "UploadError", "/esd/inference": "InferenceError",
              "/esd/api/inference": "InferenceError", "/esd": "LambdaError"}
    for method, path, op in operations(doc):
        if path == "/healthz":
            assert error_model(op, "500") == "GenericError"
            continue
        if path.lstrip("/").startswith(("v1alpha1", "v1alpha2")):  # EKS: a plain-text 400, JSON 401 and 429
            assert "text/plain" in op["responses"]["400"]["content"], (method, path)
            assert error_model(op, "401") == error_model(op, "429") == "EksMessage", (method, path)
            continue
        shape = next(v for k, v in shapes.items() if path.startswith(k))
        for status in ("400", "401", "413", "429", "500"):
            assert error_model(op, status) == shape, (method, path, status)
        assert set(op["responses"]["429"]["headers"]) == {"Retry-After", "RateLimit-Policy", "RateLimit"}
        if "{" in path:
            assert error_model(op, "404") == shape, (method, path)
    submits = {"/v1/jobs": ("402", "409"), "/v1/generation/{engine_id}/text-to-image": ("402", "404", "504")}
    for path, statuses in submits.items():
        assert all(s in doc["paths"][path]["post"]["responses"] for s in statuses)
    for path in ("/v1/admin/tenants/{tenant_id}/credits", "/v1/admin/tenants/{tenant_id}/webhook-secret/rotate"):
        assert error_model(doc["paths"][path]["post"], "403") == "ErrorBody"


def test_upload_routes_declare_their_bodies(doc: dict[str, Any]) -> None:
    def body(path: str, method: str = "post") -> dict[str, Any]:
        content: dict[str, Any] = doc["paths"][path][method]["requestBody"]["content"]
        return content

    binary = {"type": "string", "format": "binary"}
    upload = body("/v1/resource/image/upload")["multipart/form-data"]["schema"]
    assert upload["properties"]["file"] == binary and upload["required"] == ["file"]
    put = body("/v1/resource/image/{resource_id}", "put")
    assert set(put) == {"image/png", "image/jpeg", "image/webp"} and put["image/png"]["schema"] == binary
    files = {"image-to-image": {"init_image"}, "image-to-image/masking": {"init_image", "mask_image"},
             "image-to-image/upscale": {"image"}}
    for route, names in files.items():
        form = body(f"/v1/generation/{{engine_id}}/{route}")["multipart/form-data"]["schema"]
        assert {n for n, p in form["properties"].items() if p == binary} == names
        if route != "image-to-image/upscale":
            assert {"text_prompts[0][text]", "init_image"} <= set(form["required"])
            assert form["properties"]["samples"]["maximum"] == 10


def test_raw_upload_routes_declare_their_bodies(doc: dict[str, Any]) -> None:
    binary = {"type": "string", "format": "binary"}
    for path in ("/v1/uploads/parts/{upload_id}/{part_number}", "/v1/uploads/objects/{key}"):
        put = doc["paths"][path]["put"]
        assert put["requestBody"]["content"]["application/octet-stream"]["schema"] == binary
        assert "ETag" in put["responses"]["200"]["headers"]
