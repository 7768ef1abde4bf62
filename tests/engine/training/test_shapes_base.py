"""The `shapes` trainer, end to end with a tiny budget: it writes a loadable SD folder, deterministically."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from diffusiond.engine.training.shapes_base import ShapesTrainConfig, train_shapes

# A few steps on a few images: enough to run every stage, small enough to take seconds.
TINY = ShapesTrainConfig(dataset_size=24, vae_steps=2, vae_batch_size=4, decoder_steps=2,
                         decoder_batch_size=4, unet_steps=2, batch_size=4, snapshot_every=1, refine_steps=2,
                         polish_steps=2)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("shapes-train")
    first = train_shapes(root / "a", seed=0, config=TINY, progress=False)
    second = train_shapes(root / "b", seed=0, config=TINY, progress=False)
    return first, second


def _weights(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.glob("*/*.safetensors"))}


def test_writes_a_stable_diffusion_folder(runs: tuple[Path, Path]) -> None:
    folder = runs[0]
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    assert set(_weights(folder)) == {
        "text_encoder/model.safetensors",
        "unet/diffusion_pytorch_model.safetensors",
        "vae/diffusion_pytorch_model.safetensors",
    }
    record = json.loads((folder / "TRAINING.json").read_text())
    assert record["config"]["seed"] == 0 and record["unet_steps"] == 2
    assert "train-base shapes" in record["command"]
    assert {p.name for p in (folder / "tokenizer").iterdir()} == {"tokenizer.json", "tokenizer_config.json"}
    scheduler = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler["prediction_type"] == "v_prediction" and len(scheduler["trained_betas"]) == 1000
    assert scheduler["clip_sample"] is False and scheduler["set_alpha_to_one"] is False
    vae_config = json.loads((folder / "vae" / "config.json").read_text())
    assert vae_config["scaling_factor"] > 0
    # the snapshot after step 1 is a complete model too
    assert (folder / "checkpoints" / "step-1" / "unet" / "diffusion_pytorch_model.safetensors").is_file()


def test_same_seed_same_weights(runs: tuple[Path, Path]) -> None:
    first, second = runs
    assert _weights(first) == _weights(second)
    # and the weights moved away from the seeded initialisation: the steps really trained
    assert _weights(first / "checkpoints" / "step-1") != _weights(first)


def test_the_result_generates_through_diffusers(runs: tuple[Path, Path]) -> None:
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(runs[0], local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.text_encoder.dtype == torch.float32 and pipe.unet.dtype == torch.float32
    image = pipe("a red circle", num_inference_steps=2, height=64, width=64,
                 generator=torch.Generator().manual_seed(0)).images[0]
    assert image.size == (64, 64)


def test_reusing_the_autoencoder_trains_the_same_unet(runs: tuple[Path, Path], tmp_path: Path) -> None:
    reused = train_shapes(tmp_path / "reused", seed=0, config=TINY, vae_from=runs[0], progress=False)
    same, original = _weights(reused), _weights(runs[0])
    for name in ("unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"):
        assert same[name] == original[name]
    # (the decoder differs: TINY refines it again on top of the saved, already refined one)


def test_resuming_from_a_saved_stage_gives_the_from_scratch_result(runs: tuple[Path, Path], tmp_path: Path) -> None:
    import dataclasses

    main_only = train_shapes(tmp_path / "main", seed=0, progress=False, vae_from=runs[0],
                             config=dataclasses.replace(TINY, refine_steps=0, polish_steps=0))
    refined_only = train_shapes(tmp_path / "refined-only", seed=0, config=dataclasses.replace(TINY, polish_steps=0),
                                vae_from=runs[0], refine_from=main_only, progress=False)
    from_4b = train_shapes(tmp_path / "from-4b", seed=0, config=TINY, vae_from=runs[0], refine_from=main_only,
                           progress=False)
    from_4c = train_shapes(tmp_path / "from-4c", seed=0, config=TINY, vae_from=runs[0], polish_from=refined_only,
                           progress=False)
    original, resumed_4b, resumed_4c = _weights(runs[0]), _weights(from_4b), _weights(from_4c)
    until_4a, until_4b = _weights(main_only), _weights(refined_only)
    for name in ("unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"):
        assert resumed_4b[name] == original[name] == resumed_4c[name]
        # every later stage really changed the weights
        assert until_4a[name] != until_4b[name] != original[name]
