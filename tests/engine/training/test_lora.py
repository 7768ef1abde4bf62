"""The LoRA trainer on real models (`shapes`; tiny SDXL for its code path), a few steps each:
determinism, exact resumption, the kohya file against the in-memory adapter."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from diffusiond.domain.models import ModelFormat, ModelKind, ModelRecord
from diffusiond.domain.training import TrainSettings
from diffusiond.engine.context import Canceled
from diffusiond.engine.loader import load_checkpoint
from diffusiond.engine.training.dataset import build_examples
from diffusiond.engine.training.kohya import save_lora
from diffusiond.engine.training.lora import TrainResult, TrainRun, train_lora
from diffusiond.engine.training.loss_curve import draw_loss_curve
from diffusiond.testing.concepts import pictures
from tests.engine.training.conftest import SHAPES_RECORD, TrainContext

SETTINGS = TrainSettings(steps=6, learning_rate=1e-2, rank=4, alpha=4.0, batch_size=2, resolution=64,
                         checkpoint_every=2)


def run_of(settings: TrainSettings = SETTINGS, seed: int = 3, flip: bool = False) -> TrainRun:
    examples = build_examples([(p, "") for p in pictures("huge", 4)], "hgsz", 64)
    return TrainRun(examples, settings, seed, "hgsz", "shapes", flip=flip)


def train(ctx: TrainContext, run: TrainRun, record: ModelRecord = SHAPES_RECORD) -> TrainResult:
    return train_lora(load_checkpoint(record, ctx.root / "cache"), run, ctx)


def saved(result: TrainResult, path: Path) -> bytes:
    return save_lora(path, result.tensors, result.metadata).read_bytes()


def test_same_seed_and_data_give_the_same_file_and_another_seed_does_not(train_ctx: TrainContext,
                                                                          tmp_path: Path) -> None:
    first = saved(train(train_ctx, run_of(flip=True)), tmp_path / "a.safetensors")
    again = saved(train(TrainContext(tmp_path / "b"), run_of(flip=True)), tmp_path / "b.safetensors")
    other = train(TrainContext(tmp_path / "c"), run_of(seed=4, flip=True))
    assert first == again
    assert any(not torch.equal(v, load_file(tmp_path / "a.safetensors")[k]) for k, v in other.tensors.items())


def test_a_resumed_training_ends_exactly_where_an_uninterrupted_one_does(tmp_path: Path) -> None:
    whole = train(TrainContext(tmp_path / "whole"), run_of())
    ctx = TrainContext(tmp_path / "cut", cancel_at_step=4)
    with pytest.raises(Canceled):
        train(ctx, run_of())
    assert ctx.checkpoints == 2 and not ctx.models  # after steps 2 and 4; nothing saved as a model
    ctx.cancel_at_step = None
    resumed = train(ctx, run_of())
    assert resumed.resumed_at == 4
    assert resumed.losses == whole.losses and len(whole.losses) == 6
    assert resumed.tensors.keys() == whole.tensors.keys()
    assert all(torch.equal(resumed.tensors[k], whole.tensors[k]) for k in whole.tensors)
    # a checkpoint of other settings is not resumed: the run starts afresh
    fresh = train(ctx, run_of(dataclasses.replace(SETTINGS, learning_rate=5e-3)))
    assert fresh.resumed_at == 0


def test_progress_loss_and_eta_are_reported_every_step(train_ctx: TrainContext) -> None:
    result = train(train_ctx, run_of(dataclasses.replace(SETTINGS, checkpoint_every=0)))
    assert [m["step"] for m in train_ctx.metrics] == [1, 2, 3, 4, 5, 6]
    assert train_ctx.progress[-1] == 1.0 and train_ctx.metrics[-1]["eta_seconds"] == 0.0
    assert all(m["steps"] == 6 and m["loss"] > 0 for m in train_ctx.metrics)
    assert train_ctx.checkpoints == 0 and len(result.losses) == 6
    curve = draw_loss_curve(result.losses)
    assert curve.size == (640, 360) and len(curve.getcolors() or []) > 2


def kohya_keys_are_well_formed(keys: set[str], prefixes: tuple[str, ...]) -> None:
    modules = {k.rsplit(".", 2)[0] if k.endswith(".weight") else k.rsplit(".", 1)[0] for k in keys}
    for module in modules:
        assert module.startswith(prefixes), module
        assert {f"{module}.lora_down.weight", f"{module}.lora_up.weight", f"{module}.alpha"} <= keys


def unet_output(pipe: Any, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    unet = pipe.unet
    latents = torch.randn((1, 4, 16, 16), generator=generator)
    hidden = torch.randn((1, 77, unet.config.cross_attention_dim), generator=generator)
    with torch.no_grad():
        out: torch.Tensor = unet(latents, torch.tensor([500]), hidden).sample
    return out


def text_output(pipe: Any) -> torch.Tensor:
    ids = pipe.tokenizer(["hgsz a red circle"], padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        out: torch.Tensor = pipe.text_encoder(ids)[0]
    return out


def test_the_kohya_file_does_what_the_trained_adapter_did(train_ctx: TrainContext, tmp_path: Path) -> None:
    settings = dataclasses.replace(SETTINGS, train_text_encoder=True, alpha=2.0, checkpoint_every=0)
    result = train(train_ctx, run_of(settings))
    path = save_lora(tmp_path / "lora" / "hgsz.safetensors", result.tensors, result.metadata)
    keys = set(result.tensors)
    kohya_keys_are_well_formed(keys, ("lora_unet_", "lora_te_text_model_encoder_layers_"))
    assert "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn2_to_out_0.lora_up.weight" in keys
    assert result.tensors["lora_unet_mid_block_attentions_0_transformer_blocks_0_attn1_to_q.alpha"].item() == 2.0
    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata()
    assert meta["diffusiond_trigger"] == "hgsz" and meta["ss_network_dim"] == "4" and meta["ss_network_alpha"] == "2"
    assert meta["ss_base_model_version"] == "shapes" and meta["ss_steps"] == "6"
    trained_unet, trained_text = unet_output(result.pipe), text_output(result.pipe)
    # a fresh base with the file loaded through diffusers computes what the trained adapter did
    fresh = load_checkpoint(SHAPES_RECORD, tmp_path / "cache").pipe
    base_unet, base_text = unet_output(fresh), text_output(fresh)
    fresh.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name="trained")
    assert not torch.allclose(trained_unet, base_unet, atol=1e-4)
    assert not torch.allclose(trained_text, base_text, atol=1e-4)
    torch.testing.assert_close(unet_output(fresh), trained_unet, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(text_output(fresh), trained_text, atol=1e-5, rtol=1e-4)


def test_sdxl_trains_with_pooled_embeddings_time_ids_and_both_text_encoders(tmp_path: Path) -> None:
    from diffusiond.testing.tiny_models import save_tiny_sdxl

    folder = save_tiny_sdxl(tmp_path / "sdxl")
    record = ModelRecord("tiny-sdxl", ModelKind.CHECKPOINT, ModelFormat.DIFFUSERS, str(folder), family="sdxl")
    settings = TrainSettings(steps=2, learning_rate=1e-2, rank=2, alpha=2.0, batch_size=2, resolution=64,
                             aspect_buckets=True, train_text_encoder=True, checkpoint_every=0)
    wide = [p.resize((96, 48)) for p in pictures("stripe", 2)]
    examples = build_examples([(p, "a band") for p in [*pictures("stripe", 2), *wide]], "strp", 64,
                              buckets=True, multiple=16)
    assert {e.image.size for e in examples} == {(64, 64), (80, 48)}  # 2:1 pictures: the widest bucket of <= 64**2
    result = train(TrainContext(tmp_path), TrainRun(examples, settings, 1, "strp", "tiny-sdxl"), record)
    kohya_keys_are_well_formed(set(result.tensors), ("lora_unet_", "lora_te1_text_model_", "lora_te2_text_model_"))
    path = save_lora(tmp_path / "lora" / "x.safetensors", result.tensors, result.metadata)
    fresh = load_checkpoint(record, tmp_path / "cache").pipe
    fresh.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name="x")
    assert {"x"} == {n for names in fresh.get_list_adapters().values() for n in names}
    assert set(fresh.get_list_adapters()) == {"unet", "text_encoder", "text_encoder_2"}
