"""Call every Stability v1 operation the way Stability's own examples do, against any host.

    API_HOST=http://127.0.0.1:7860 STABILITY_API_KEY=sk-dfd-... python examples/stability_v1.py [IMAGES_DIR]

IMAGES_DIR holds init_image.png and mask_image_white.png (Stability's example images; the
repository's tests use the copies in ../shared/fixtures/stability). Outputs go to ./out/.
The engine ids are Stability's; map them to local models first:
    diffusiond models alias stable-diffusion-v1-5 shapes
    diffusiond models alias stable-inpainting-512-v2-0 shapes
    diffusiond models alias esrgan-v1-x2plus lanczos
"""

from __future__ import annotations

import base64
import os
import sys
from pathlib import Path

import httpx

HOST = os.environ.get("API_HOST", "https://api.stability.ai")
KEY = os.environ["STABILITY_API_KEY"]
IMAGES = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
OUT = Path("out")


def check(r: httpx.Response) -> httpx.Response:
    if r.status_code != 200:
        raise SystemExit(f"{r.request.method} {r.request.url}: {r.status_code} {r.text}")
    return r


def save_artifacts(r: httpx.Response, name: str) -> None:
    for i, art in enumerate(check(r).json()["artifacts"]):
        path = OUT / f"{name}_{i}.png"
        path.write_bytes(base64.b64decode(art["base64"]))
        print(f"wrote {path} (seed {art['seed']}, {art['finishReason']})")


def main() -> None:
    OUT.mkdir(exist_ok=True)
    auth = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=HOST, headers=auth, timeout=600) as c:
        print("engines:", [e["id"] for e in check(c.get("/v1/engines/list")).json()])
        print("account:", check(c.get("/v1/user/account")).json()["id"])
        print("balance:", check(c.get("/v1/user/balance")).json()["credits"])
        prompt = {"text_prompts": [{"text": "a red circle on a blue background"}], "cfg_scale": 7,
                  "clip_guidance_preset": "FAST_BLUE", "height": 512, "width": 512, "samples": 1, "steps": 30}
        save_artifacts(c.post("/v1/generation/stable-diffusion-v1-5/text-to-image", json=prompt,
                              headers={"Accept": "application/json"}), "v1_txt2img")
        form = {"image_strength": "0.35", "init_image_mode": "IMAGE_STRENGTH",
                "text_prompts[0][text]": "a yellow square on a green background", "cfg_scale": "7",
                "clip_guidance_preset": "FAST_BLUE", "samples": "1", "steps": "30"}
        with (IMAGES / "init_image.png").open("rb") as init:
            save_artifacts(c.post("/v1/generation/stable-diffusion-v1-5/image-to-image", data=form,
                                  files={"init_image": init}), "v1_img2img")
        form = {"mask_source": "MASK_IMAGE_WHITE", "text_prompts[0][text]": "a white circle",
                "cfg_scale": "7", "clip_guidance_preset": "FAST_BLUE", "samples": "1", "steps": "30"}
        with (IMAGES / "init_image.png").open("rb") as init, (IMAGES / "mask_image_white.png").open("rb") as mask:
            save_artifacts(c.post("/v1/generation/stable-inpainting-512-v2-0/image-to-image/masking", data=form,
                                  files={"init_image": init, "mask_image": mask}), "v1_img2img_masking")
        with (IMAGES / "init_image.png").open("rb") as init:
            r = check(c.post("/v1/generation/esrgan-v1-x2plus/image-to-image/upscale", data={"width": "1024"},
                             files={"image": init}, headers={"Accept": "image/png"}))
        (OUT / "v1_upscaled_image.png").write_bytes(r.content)
        print("wrote out/v1_upscaled_image.png")
        print("balance:", check(c.get("/v1/user/balance")).json()["credits"])


if __name__ == "__main__":
    main()
