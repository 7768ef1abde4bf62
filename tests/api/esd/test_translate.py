"""The dialect's translation: the client's config values, time formats, tags, the configurable mount."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from diffusiond.api.esd import translate as t
from diffusiond.api.esd.schemas import InferenceRequest
from diffusiond.config import Settings
from diffusiond.domain.errors import InvalidParams


def test_time_formats() -> None:
    moment = datetime(2023, 7, 4, 8, 0, 35, 171309, tzinfo=UTC)
    assert t.start_time(moment) == "2023-07-04 08:00:35.171309"
    assert t.complete_time(moment) == "2023-07-04-08-00-35"


def test_the_clients_config_becomes_a1111_fields() -> None:
    config = {"txt2img_prompt": "a cat", "txt2img_steps": "12", "txt2img_cfg_scale": "6.5", "txt2img_seed": "-1",
              "txt2img_batch_count": "2", "txt2img_enable_hr": "true", "txt2img_hr_scale": "", "txt2img_styles": "a, b",
              "img2img_prompt": "ignored for txt2img", "txt2img_sagemaker_lora_model": "x.safetensors:y.safetensors"}
    body = InferenceRequest.model_validate({"sagemaker_endpoint": "e", "task_type": "txt2img",
                                            "Stable-diffusion": {"m.safetensors": "s3://b/m"}})
    assert t.uses_config(body)
    fields = t.a1111_fields(body, config)
    assert fields["prompt"] == "a cat" and fields["steps"] == 12 and fields["cfg_scale"] == 6.5
    assert fields["n_iter"] == 2 and fields["enable_hr"] is True and "hr_scale" not in fields
    assert fields["styles"] == ["a", "b"] and fields["sampler_index"] == "Euler a"  # the original's default
    names = t.model_names(body, config)
    assert names["checkpoint"] == ["m.safetensors"] and names["lora"] == ["x.safetensors", "y.safetensors"]
    with pytest.raises(InvalidParams, match="txt2img_steps"):
        t.a1111_fields(body, {"txt2img_steps": "lots"})
    img = t.config_fields({"img2img_resize_mode": "Crop and resize", "img2img_init_img": "data:x"}, "img2img")
    assert img == {"resize_mode": 1, "init_images": ["data:x"]}


def test_hypernetwork_tags_and_lists() -> None:
    prompt, found = t.hypernetworks_of("a <hypernet:one:0.5> b <hypernet:two>", ["three.safetensors", "one"])
    assert prompt == "a  b" and found == [("one", 0.5), ("two", 1.0), ("three.safetensors", 1.0)]
    with pytest.raises(InvalidParams):
        t.hypernetworks_of("<hypernet:x:heavy>", [])


def test_file_names() -> None:
    assert t.file_name("/path/to/a/file.png") == "file.png"
    assert t.file_name("C:\\models\\m.safetensors") == "m.safetensors"
    for bad in ("..", "a/..", "", "x\x00y", ".hidden"):
        with pytest.raises(InvalidParams):
            t.file_name(bad)


def test_the_prefix_is_configurable(tmp_path: Path) -> None:
    from diffusiond.app import create_app

    app = create_app(Settings(home=tmp_path, executor="none", esd_prefix="/prod"))
    paths = set(app.openapi()["paths"])
    assert "/prod/inference/run-sagemaker-inference" in paths and "/prod/dataset/{dataset_name}/data" in paths
    assert not any(p.startswith("/esd/") for p in paths)
    for bad in ("prod", "/prod/"):
        with pytest.raises(ValueError):
            Settings(home=tmp_path, esd_prefix=bad)
