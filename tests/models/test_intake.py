"""Uploaded model files: kinds and families from their bytes; hostile files refused, never unpickled."""

from __future__ import annotations

import io
import json
import pickle
import struct
import tarfile
from pathlib import Path

import pytest

from diffusiond.domain.errors import InvalidParams, PayloadTooLarge
from diffusiond.domain.models import ModelKind
from diffusiond.models.intake import IntakeLimits, inspect_upload
from diffusiond.testing import tiny_models

LIMITS = IntakeLimits(max_bytes=64 * 1024 * 1024, max_members=10)


def header_only(path: Path, shapes: dict[str, list[int]], metadata: dict[str, str] | None = None) -> Path:
    header: dict[str, object] = {"__metadata__": metadata} if metadata else {}
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


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, tiny_sd_dir: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("intake")
    return {
        "checkpoint": tiny_models.save_tiny_single_file(tiny_sd_dir, root / "tiny.safetensors"),
        "lora": tiny_models.save_tiny_lora(root / "lora.safetensors"),
        "embedding": tiny_models.save_tiny_embedding(root / "emb.safetensors"),
        "hypernetwork": tiny_models.save_tiny_hypernetwork(root / "hn.safetensors"),
        "controlnet": header_only(root / "cn.safetensors", {"control_model.input_hint_block.0.weight": [16, 3]}),
        "vae": header_only(root / "vae.safetensors", {"encoder.conv_in.weight": [4, 3], "decoder.conv_out.bias": [3]}),
        "sd15": header_only(root / "sd15.safetensors", {
            "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": [320, 768]}),
        "sdxl": header_only(root / "xl.safetensors", {"model.diffusion_model.out.2.bias": [4],
                                                       "conditioner.embedders.1.model.ln_final.weight": [1280]}),
    }


@pytest.mark.parametrize("name,kind,family", [
    ("checkpoint", ModelKind.CHECKPOINT, "tiny"), ("lora", ModelKind.LORA, "sd15"),
    ("embedding", ModelKind.EMBEDDING, "any"), ("hypernetwork", ModelKind.HYPERNETWORK, "sd15"),
    ("controlnet", ModelKind.CONTROLNET, "sd15"), ("vae", ModelKind.VAE, "sd15"),
    ("sd15", ModelKind.CHECKPOINT, "sd15"), ("sdxl", ModelKind.CHECKPOINT, "sdxl")])
def test_kind_and_family_from_the_bytes(files: dict[str, Path], tmp_path: Path, name: str, kind: ModelKind,
                                        family: str) -> None:
    found, = inspect_upload(files[name], f"{name}.safetensors", tmp_path, LIMITS)
    assert (found.kind, found.family) == (kind, family)


def test_a_tar_named_like_the_model_is_unpacked(files: dict[str, Path], tmp_path: Path) -> None:
    archive = tmp_path / "tiny.safetensors"  # the AWS extension's client names its tar like the model
    with tarfile.open(archive, "w") as tar:
        tar.add(files["checkpoint"], arcname="models/Stable-diffusion/tiny.safetensors")
        yaml = tarfile.TarInfo("models/Stable-diffusion/tiny.yaml")
        yaml.size = 3
        tar.addfile(yaml, io.BytesIO(b"a: 1"[:3]))
    found, = inspect_upload(archive, "tiny.safetensors", tmp_path / "work", LIMITS)
    assert found.kind is ModelKind.CHECKPOINT and found.name == "tiny.safetensors"
    assert found.path.is_relative_to(tmp_path / "work")


class Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("unpickled!",))


@pytest.mark.parametrize("content", ["pickle", "torch"])
def test_pickles_under_any_name_are_refused(tmp_path: Path, content: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "model.safetensors"
    if content == "pickle":
        path.write_bytes(pickle.dumps(Evil()))
    else:
        import torch

        torch.save({"x": torch.zeros(2)}, str(path))
    with pytest.raises(InvalidParams) as e:
        inspect_upload(path, "model.safetensors", tmp_path, LIMITS)
    assert e.value.code == "unsafe_model_format" and "never loaded" in e.value.message
    assert "unpickled!" not in capsys.readouterr().out


def test_broken_safetensors_are_refused(files: dict[str, Path], tmp_path: Path) -> None:
    truncated = tmp_path / "t.safetensors"
    truncated.write_bytes(files["lora"].read_bytes()[:-10])
    for bad in (truncated, header_only(tmp_path / "none.safetensors", {}),
                tmp_path / "text.safetensors"):
        if bad.name == "text.safetensors":
            bad.write_text("hello, not a model at all")
        with pytest.raises(InvalidParams) as e:
            inspect_upload(bad, bad.name, tmp_path, LIMITS)
        assert e.value.code == "invalid_model_file", bad.name


def tar_with(path: Path, *members: tarfile.TarInfo, data: bytes = b"x") -> Path:
    with tarfile.open(path, "w") as tar:
        for m in members:
            tar.addfile(m, io.BytesIO(data) if m.isreg() else None)
    return path


def member(name: str, kind: bytes = tarfile.REGTYPE, size: int = 1, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname = kind, size if kind == tarfile.REGTYPE else 0, link
    return info


@pytest.mark.parametrize("entry", [
    member("../evil.safetensors"), member("/etc/evil.safetensors"), member("a/../../evil.safetensors"),
    member("link.safetensors", tarfile.SYMTYPE, link="/etc/passwd"),
    member("hard.safetensors", tarfile.LNKTYPE, link="/etc/passwd"), member("dev", tarfile.CHRTYPE),
    member("fifo", tarfile.FIFOTYPE)])
def test_unsafe_archives_are_refused_and_write_nothing_outside(tmp_path: Path, entry: tarfile.TarInfo) -> None:
    archive = tar_with(tmp_path / "up.safetensors", entry)
    work = tmp_path / "deep" / "work"
    with pytest.raises(InvalidParams) as e:
        inspect_upload(archive, "up.safetensors", work, LIMITS)
    assert e.value.code == "unsafe_archive"
    assert not (tmp_path / "deep" / "evil.safetensors").exists() and not (tmp_path / "evil.safetensors").exists()


def test_archive_caps(tmp_path: Path) -> None:
    many = tar_with(tmp_path / "many.tar", *[member(f"f{i}.txt") for i in range(11)])
    with pytest.raises(InvalidParams, match="more than 10"):
        inspect_upload(many, "many.tar", tmp_path / "w1", LIMITS)
    big = tar_with(tmp_path / "big.tar", member("a.safetensors", size=4096), data=b"\0" * 4096)
    with pytest.raises(PayloadTooLarge):
        inspect_upload(big, "big.tar", tmp_path / "w3", IntakeLimits(max_bytes=1000, max_members=10))


def test_an_embedded_config_naming_other_classes_is_refused(tmp_path: Path) -> None:
    config = {"family": "x", "tokenizers": {}, "files": {"model_index.json": {
        "_class_name": "StableDiffusionPipeline", "unet": ["transformers", "AutoModel"]}}}
    path = header_only(tmp_path / "m.safetensors", {"model.diffusion_model.out.2.bias": [4]},
                       {"diffusiond.config": json.dumps(config)})
    with pytest.raises(InvalidParams, match=r"may not be transformers\.AutoModel"):
        inspect_upload(path, "m.safetensors", tmp_path, LIMITS)
