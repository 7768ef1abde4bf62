from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from diffusiond.domain.errors import InvalidParams
from diffusiond.domain.models import ModelFormat, ModelKind, ModelRecord
from diffusiond.domain.params import GenerateSpec, Txt2Img
from diffusiond.engine.loader import CONFIGS, detect_family, load_checkpoint, prepare_config_dir
from diffusiond.engine.runner import Engine
from diffusiond.engine.single_file import export_single_file, sibling_config_dir
from tests.engine.conftest import Context, Resolver, TinyModels, diffusion

U = "model.diffusion_model."
SD2_PROBE = U + "input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight"


@pytest.fixture(scope="module")
def single_file(tiny: TinyModels, resolver: Resolver) -> Path:
    path = export_single_file(tiny.sd, tiny.root / "single" / "tiny.safetensors")
    resolver.add(ModelRecord("tiny-file", ModelKind.CHECKPOINT, ModelFormat.SAFETENSORS, str(path), family="tiny"))
    return path


def test_round_trip_gives_the_same_weights_and_image(
    single_file: Path, tiny: TinyModels, engine: Engine, ctx: Context, tmp_path: Path
) -> None:
    assert sibling_config_dir(single_file).joinpath("unet", "config.json").is_file()
    assert not list(sibling_config_dir(single_file).rglob("*.safetensors"))  # configs only
    record = ModelRecord("f", ModelKind.CHECKPOINT, ModelFormat.SAFETENSORS, str(single_file))
    folder = ModelRecord("d", ModelKind.CHECKPOINT, ModelFormat.DIFFUSERS, str(tiny.sd))
    a, b = load_checkpoint(folder, tmp_path).pipe, load_checkpoint(record, tmp_path).pipe
    for name in ("unet", "vae", "text_encoder"):
        sa, sb = getattr(a, name).state_dict(), getattr(b, name).state_dict()
        assert sa.keys() == sb.keys()
        assert all(torch.equal(sa[k], sb[k]) for k in sa), name
    images = [
        engine.run(GenerateSpec(stages=(Txt2Img(diffusion(model)),), seed=21), ctx)[0].image.tobytes()
        for model in ("tiny", "tiny-file")
    ]
    assert images[0] == images[1]


def test_file_keys_use_the_original_layout(single_file: Path) -> None:
    from safetensors import safe_open

    with safe_open(str(single_file), framework="pt") as handle:
        keys = set(handle.keys())
    assert U + "input_blocks.0.0.weight" in keys and U + "out.2.weight" in keys
    assert U + "middle_block.1.proj_in.weight" in keys
    assert "first_stage_model.decoder.mid.attn_1.q.weight" in keys
    assert "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight" in keys


def synthetic(**shapes: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    base = {U + "input_blocks.0.0.weight": (320, 4, 3, 3), U + "time_embed.0.weight": (1280, 320)}
    return {**base, **{k.replace("__", "."): v for k, v in shapes.items()}}


def test_family_detection_on_synthetic_keys() -> None:
    sd15 = synthetic(**{SD2_PROBE.replace(".", "__"): (320, 768)})
    sd15["cond_stage_model.transformer.text_model.embeddings.position_embedding.weight"] = (77, 768)
    assert detect_family(sd15) == "sd15"
    assert detect_family({**sd15, U + "input_blocks.0.0.weight": (320, 9, 3, 3)}) == "sd15_inpaint"
    sd2 = {**sd15, SD2_PROBE: (320, 1024), "cond_stage_model.model.token_embedding.weight": (49408, 1024)}
    assert detect_family(sd2) == "sd2_v"
    assert detect_family(sd2, hint="sd2_base") == "sd2_base"
    assert detect_family({**sd2, U + "input_blocks.0.0.weight": (320, 9, 3, 3)}) == "sd2_inpaint"
    xl = {**synthetic(), "conditioner.embedders.1.model.positional_embedding": (77, 1280)}
    assert detect_family(xl) == "sdxl"
    with pytest.raises(InvalidParams):
        detect_family({"encoder.conv_in.weight": (128, 3, 3, 3)})


@pytest.mark.parametrize("suffix", [".ckpt", ".pt", ".bin", ".pth"])
def test_pickle_checkpoints_are_refused_unread(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"model{suffix}"
    path.write_bytes(b"\x80\x04 never unpickled")
    with pytest.raises(InvalidParams, match="pickle"):
        load_checkpoint(ModelRecord("p", ModelKind.CHECKPOINT, ModelFormat.SAFETENSORS, str(path)), tmp_path)


# Parameter counts of the real architectures; a wrong number in a shipped config shows up here.
REAL_SIZES = {
    ("sd15", "unet"): 859_520_964,
    ("sd15", "vae"): 83_653_863,
    ("sd15", "text_encoder"): 123_060_480,
    ("sd15_inpaint", "unet"): 859_535_364,
    ("sd2_v", "unet"): 865_910_724,
    ("sd2_v", "text_encoder"): 340_387_840,
    ("sdxl", "unet"): 2_567_463_684,
    ("sdxl", "text_encoder_2"): 694_659_840,
}


@pytest.mark.parametrize(("family", "component"), sorted(REAL_SIZES))
def test_shipped_configs_describe_the_real_architectures(family: str, component: str, tmp_path: Path) -> None:
    import diffusers
    import transformers
    from accelerate import init_empty_weights

    folder = prepare_config_dir(family, tmp_path)
    index = json.loads((folder / "model_index.json").read_text())
    library, class_name = index[component]
    with init_empty_weights():
        if library == "transformers":
            cls = getattr(transformers, class_name)
            model = cls(cls.config_class.from_pretrained(str(folder / component)))
        else:
            cls = getattr(diffusers, class_name)
            model = cls.from_config(cls.load_config(str(folder / component)))
    count = sum(p.numel() for p in model.parameters())
    assert count == REAL_SIZES[(family, component)]


def test_every_family_prepares_tokenizers(tmp_path: Path) -> None:
    from transformers import CLIPTokenizer

    for family in ("sd15", "sd15_inpaint", "sd2_v", "sd2_base", "sd2_inpaint", "sdxl", "sdxl_inpaint"):
        folder = prepare_config_dir(family, tmp_path)
        tokenizer = CLIPTokenizer.from_pretrained(str(folder / "tokenizer"))
        assert tokenizer("a photo").input_ids[0] == 49406
        if family.startswith("sd2"):
            assert tokenizer.pad_token == "!"
    assert {p.name for p in CONFIGS.iterdir() if p.is_dir()} >= {"sd15", "sd15_inpaint", "sd2_v", "sd2_base", "sdxl"}
    xl = json.loads((prepare_config_dir("sdxl_inpaint", tmp_path) / "model_index.json").read_text())
    assert xl["_class_name"] == "StableDiffusionXLInpaintPipeline"


def _shapes_like_unet() -> object:
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=16, block_out_channels=(32, 64, 64), layers_per_block=1, cross_attention_dim=32,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"), attention_head_dim=8,
        norm_num_groups=16,
    )


def _real_sd15_unet() -> object:
    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel

    with init_empty_weights():  # the real 860M-parameter layout, without allocating it
        return UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(str(CONFIGS / "sd15" / "unet")))


@pytest.mark.parametrize("build", [_shapes_like_unet, _real_sd15_unet], ids=["shapes-like", "sd15"])
def test_unet_mapping_inverts_diffusers_conversion(build: object) -> None:
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    from diffusiond.engine.single_file import unet_to_ldm

    unet = build()  # type: ignore[operator]
    state = unet.state_dict()
    back = convert_ldm_unet_checkpoint(unet_to_ldm(state, unet.config.layers_per_block), dict(unet.config))
    assert back.keys() == state.keys()
    assert all(back[k] is state[k] for k in state)


def test_vae_mapping_inverts_diffusers_conversion() -> None:
    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    from diffusiond.engine.single_file import vae_to_ldm

    for kwargs in ({"mid_block_add_attention": False, "layers_per_block": 1}, {"layers_per_block": 2}):
        vae = AutoencoderKL(
            block_out_channels=(32, 64, 64), down_block_types=("DownEncoderBlock2D",) * 3,
            up_block_types=("UpDecoderBlock2D",) * 3, norm_num_groups=16, **kwargs,  # type: ignore[arg-type]
        )
        state = vae.state_dict()
        back = convert_ldm_vae_checkpoint(vae_to_ldm(state, 3), dict(vae.config))
        assert back.keys() == state.keys()
        assert all(torch.equal(back[k], state[k]) for k in state)


def test_sd2_text_layout_round_trip(tiny: TinyModels, tmp_path: Path) -> None:
    path = export_single_file(tiny.sd, tmp_path / "sd2-style.safetensors", open_clip=True)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        assert "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight" in handle.keys()  # noqa: SIM118
    loaded = load_checkpoint(ModelRecord("s", ModelKind.CHECKPOINT, ModelFormat.SAFETENSORS, str(path)), tmp_path)
    folder = load_checkpoint(ModelRecord("d", ModelKind.CHECKPOINT, ModelFormat.DIFFUSERS, str(tiny.sd)), tmp_path)
    a, b = folder.pipe.text_encoder.state_dict(), loaded.pipe.text_encoder.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_bundled_shapes_model_is_loadable_as_a_single_file(
    engine: Engine, ctx: Context, resolver: Resolver, tmp_path: Path
) -> None:
    from diffusiond.models.registry import BUNDLED_DIR

    shapes = BUNDLED_DIR / "shapes"
    if not (shapes / "model_index.json").is_file():
        pytest.skip("the bundled shapes model is not built yet")
    path = export_single_file(shapes, tmp_path / "shapes.safetensors")
    resolver.add(ModelRecord("shapes-dir", ModelKind.CHECKPOINT, ModelFormat.DIFFUSERS, str(shapes), family="shapes"))
    resolver.add(ModelRecord("shapes-file", ModelKind.CHECKPOINT, ModelFormat.SAFETENSORS, str(path), family="shapes"))
    images = [
        engine.run(GenerateSpec(stages=(Txt2Img(diffusion(model, prompt="a red circle", steps=4)),), seed=3), ctx)[0]
        for model in ("shapes-dir", "shapes-file")
    ]
    assert images[0].image.tobytes() == images[1].image.tobytes()


def test_folders_without_safetensors_are_refused(tiny: TinyModels, tmp_path: Path) -> None:
    import shutil

    folder = tmp_path / "pickled"
    shutil.copytree(tiny.sd, folder)
    for weights in folder.rglob("*.safetensors"):
        weights.with_suffix(".bin").write_bytes(b"never unpickled")
        weights.unlink()
    record = ModelRecord("p", ModelKind.CHECKPOINT, ModelFormat.DIFFUSERS, str(folder))
    with pytest.raises(InvalidParams, match="pickle"):
        load_checkpoint(record, tmp_path)
    for weights in folder.rglob("*.bin"):
        weights.unlink()
    with pytest.raises(InvalidParams, match="incomplete"):
        load_checkpoint(record, tmp_path)
