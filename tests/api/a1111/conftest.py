"""One server for the A1111 contract tests: `shapes` by default, the tiny model with a LoRA and an
embedding beside it, one worker."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from diffusiond.config import Settings
from diffusiond.domain.models import ModelKind
from diffusiond.services import build_services
from tests.conftest import LiveServer, free_port

KeyFactory = Callable[..., str]


@pytest.fixture(scope="session")
def a1111_server(tmp_path_factory: pytest.TempPathFactory, tiny_sd_dir: Path) -> Iterator[LiveServer]:
    from diffusiond.testing import tiny_models

    home = tmp_path_factory.mktemp("a1111")
    services = build_services(Settings(home=home, executor="none"), with_workers=False)
    services.db.migrate()
    services.models.register_builtins()
    services.models.add(tiny_sd_dir, "tiny", ModelKind.CHECKPOINT, family="tiny")
    services.models.add(tiny_models.save_tiny_lora(home / "m" / "tiny_lora.safetensors"), "tiny-lora", ModelKind.LORA)
    services.models.add(tiny_models.save_tiny_embedding(home / "m" / "tiny_emb.safetensors"), "tinyemb",
                        ModelKind.EMBEDDING)
    services.db.dispose()
    live = LiveServer(home=home, port=free_port(), env={"DIFFUSIOND_DEFAULT_MODEL": "shapes", "OMP_NUM_THREADS": "1"})
    live.start()
    yield live
    live.stop()


@pytest.fixture
def a1111_key(a1111_server: LiveServer) -> Iterator[KeyFactory]:
    services = a1111_server.services()

    def make(credits: float = 100.0) -> str:
        return services.keys.create("a1111", credits_milli=round(credits * 1000)).key

    yield make
    services.db.dispose()


def basic(server: LiveServer, key: str) -> httpx.Client:
    """A client as A1111 clients are: HTTP Basic with the key as the password."""
    return httpx.Client(base_url=server.url + "/sdapi/v1", auth=("user", key), timeout=300)


def b64_png(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def decode(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))
