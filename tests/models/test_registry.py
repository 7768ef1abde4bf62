"""Registering models: formats, pickle refusal, family detection, aliases."""

from __future__ import annotations

import json
import struct
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from diffusiond.domain.errors import InvalidParams, NotFound
from diffusiond.domain.models import ModelFormat, ModelKind
from diffusiond.models.registry import ModelRegistry, detect_checkpoint_family
from diffusiond.store.database import Database


def fake_safetensors(path: Path, shapes: dict[str, list[int]]) -> Path:
    """A header-only .safetensors file with the given tensor names (data zero-filled)."""
    header: dict[str, object] = {}
    offset = 0
    for name, shape in shapes.items():
        n = 2
        for s in shape:
            n *= s
        header[name] = {"dtype": "F16", "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * offset)
    return path


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    db = Database(f"sqlite:///{tmp_path / 'r.db'}")
    db.migrate()
    return ModelRegistry(db)


SD15 = {"model.diffusion_model.input_blocks.1.1.proj_in.weight": [320, 320, 1, 1],
        "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": [320, 768],
        "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": [4, 4]}
SD2 = {"model.diffusion_model.input_blocks.1.1.proj_in.weight": [320, 320],
       "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": [320, 1024]}
SDXL = {"conditioner.embedders.1.model.ln_final.weight": [1280]}


@pytest.mark.parametrize("keys,family", [(SD15, "sd15"), (SD2, "sd2"), (SDXL, "sdxl"), ({"x": [1]}, "unknown")])
def test_family_detection(keys: dict[str, list[int]], family: str) -> None:
    assert detect_checkpoint_family(keys) == family


def test_single_file_checkpoint_registered_with_detected_family(registry: ModelRegistry, tmp_path: Path) -> None:
    path = fake_safetensors(tmp_path / "m.safetensors", {k: [2, 2] for k in SD2} | {
        "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": [320, 1024]})
    rec = registry.add(path, "my-sd2")
    assert rec.family == "sd2" and rec.format is ModelFormat.SAFETENSORS


@pytest.mark.parametrize("suffix", [".ckpt", ".pt", ".bin"])
def test_pickles_are_refused(registry: ModelRegistry, tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"evil{suffix}"
    path.write_bytes(b"\x80\x04cos\nsystem\n.")
    with pytest.raises(InvalidParams) as e:
        registry.add(path, "evil")
    assert e.value.code == "unsafe_model_format"
    assert registry.list() == []


def test_garbage_safetensors_refused(registry: ModelRegistry, tmp_path: Path) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(struct.pack("<Q", 10**12) + b"{}")
    with pytest.raises(InvalidParams):
        registry.add(path, "bad")


def test_alias_resolves_and_kind_is_checked(registry: ModelRegistry, tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "model_index.json").write_text("{}")
    registry.add(folder, "mine")
    registry.alias("stable-diffusion-v1-5", "mine")
    assert registry.resolve("stable-diffusion-v1-5", ModelKind.CHECKPOINT).id == "mine"
    with pytest.raises(NotFound):
        registry.resolve("stable-diffusion-v1-5", ModelKind.UPSCALER)
    with pytest.raises(NotFound):
        registry.alias("x", "missing")


def test_replicas_registering_builtins_at_once_all_start(db: Database) -> None:
    # Replicas started together on a fresh shared database race to insert the same rows.
    registries = [ModelRegistry(db) for _ in range(6)]
    with ThreadPoolExecutor(len(registries)) as pool:
        list(pool.map(lambda r: r.register_builtins(), registries))  # none raises
    ids = [record.id for record, _ in registries[0].list()]
    assert ids.count("lanczos") == 1 and ids.count("shapes") == 1


def test_bundled_models_can_be_left_out(db: Database) -> None:
    registry = ModelRegistry(db)
    registry.register_builtins(bundled=False)
    assert [record.id for record, _ in registry.list()] == ["lanczos"]
    registry.register_builtins()
    assert sorted(record.id for record, _ in registry.list()) == ["lanczos", "shapes"]
