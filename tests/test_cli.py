"""The `diffusiond` command line, run in-process against a temporary home."""

from __future__ import annotations

from pathlib import Path

import pytest
from safetensors import safe_open
from typer.testing import CliRunner

from diffusiond.cli import app
from diffusiond.config import Settings
from diffusiond.domain.models import ModelKind
from diffusiond.testing.concepts import pictures


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DIFFUSIOND_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_train_lora_writes_a_kohya_file_and_its_loss_curve_and_registers_it(home: Path, tmp_path: Path) -> None:
    folder = tmp_path / "pictures"
    folder.mkdir()
    for i, picture in enumerate(pictures("huge", 4)):
        picture.save(folder / f"{i}.png")
    (folder / "0.txt").write_text("a big shape")
    out = tmp_path / "out" / "huge.safetensors"
    result = CliRunner().invoke(app, ["train", "lora", str(folder), "--trigger", "hgsz", "--out", str(out),
                                      "--steps", "3", "--batch-size", "2", "--rank", "2", "--seed", "3",
                                      "--threads", "1", "--register", "my-huge"])
    assert result.exit_code == 0, result.output
    assert "3 steps x batch 2 at 64px, rank 2" in result.output and f"wrote {out}" in result.output
    assert (out.parent / "huge.safetensors.loss.png").is_file()
    assert not (out.parent / "huge.safetensors.checkpoint").exists()
    with safe_open(str(out), framework="pt") as handle:
        assert handle.metadata()["diffusiond_trigger"] == "hgsz"
        assert all(k.startswith("lora_unet_") for k in handle.keys())  # noqa: SIM118
    from diffusiond.services import build_services

    services = build_services(Settings(), with_workers=False)
    try:
        record = services.models.resolve("my-huge", ModelKind.LORA)
    finally:
        services.db.dispose()
    assert record.family == "shapes" and record.trigger_words == ("hgsz",) and Path(record.path) == out.resolve()


def test_train_lora_refuses_too_few_pictures(home: Path, tmp_path: Path) -> None:
    folder = tmp_path / "few"
    folder.mkdir()
    pictures("huge", 1)[0].save(folder / "only.png")
    out = tmp_path / "x.safetensors"
    result = CliRunner().invoke(app, ["train", "lora", str(folder), "--trigger", "x", "--out", str(out)])
    assert result.exit_code != 0 and "between 4 and" in str(result.exception)
