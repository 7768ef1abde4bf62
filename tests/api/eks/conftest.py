"""A server for the EKS contract tests (shapes by default, the tiny model beside it, a dynamic-model
runtime and a ComfyUI runtime configured), a loopback image server and a callback receiver."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw

from diffusiond.config import Settings
from diffusiond.domain.models import ModelKind
from diffusiond.services import build_services
from tests.conftest import LiveServer, free_port
from tests.webhooks.receiver import Receiver

RUNTIMES = [
    {"name": "sdruntime", "type": "sdwebui", "model_filename": "v1-5-pruned-emaonly.safetensors"},
    {"name": "dynamic", "type": "sdwebui", "dynamic_model": True},
    {"name": "comfy", "type": "comfyui"},
]


def picture(size: tuple[int, int] = (64, 64)) -> bytes:
    """A shapes-like picture: a red circle on blue."""
    image = Image.new("RGB", size, (30, 30, 200))
    w, h = size
    ImageDraw.Draw(image).ellipse((w // 4, h // 4, 3 * w // 4, 3 * h // 4), fill=(220, 30, 30))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


class ImageServer:
    """Serves /cat.png, /big (more bytes than the server fetches) and /redirect (to a private address)."""

    def __init__(self) -> None:
        outer = self
        self.png = picture()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/redirect":
                    self.send_response(302)
                    self.send_header("location", "http://10.1.2.3/cat.png")
                    self.end_headers()
                    return
                body = outer.png if self.path == "/cat.png" else b"x" * (3 * 1024 * 1024)
                self.send_response(200 if self.path in ("/cat.png", "/big") else 404)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="session")
def eks_server(tmp_path_factory: pytest.TempPathFactory, tiny_sd_dir: Path) -> Iterator[LiveServer]:
    home = tmp_path_factory.mktemp("eks")
    services = build_services(Settings(home=home, executor="none"), with_workers=False)
    services.db.migrate()
    services.models.register_builtins()
    services.models.add(tiny_sd_dir, "tiny", ModelKind.CHECKPOINT, family="tiny")
    services.db.dispose()
    live = LiveServer(home=home, port=free_port(), env={
        "DIFFUSIOND_DEFAULT_MODEL": "shapes", "DIFFUSIOND_WEBHOOK_ALLOW_HOSTS": "127.0.0.1",
        "DIFFUSIOND_EKS_RUNTIMES": json.dumps(RUNTIMES), "DIFFUSIOND_FETCH_MAX_BYTES": str(2 * 1024 * 1024),
        "OMP_NUM_THREADS": "1"})
    live.start()
    yield live
    live.stop()


@pytest.fixture(scope="session")
def images() -> Iterator[ImageServer]:
    server = ImageServer()
    yield server
    server.stop()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()
