"""An existing A1111 client (webuiapi, from PyPI), unmodified but for host, port and key:

    .venv/bin/python examples/a1111_webuiapi.py PORT KEY
"""
import sys

import webuiapi

api = webuiapi.WebUIApi(host="127.0.0.1", port=int(sys.argv[1]))
api.set_auth("user", sys.argv[2])
result = api.txt2img(prompt="a red circle on a blue background", width=64, height=64, steps=20, seed=7)
result.image.save("webuiapi-txt2img.png")
print("txt2img", result.image.size, "seeds", result.info["all_seeds"], "sampler", result.info["sampler_name"])
again = api.img2img(images=[result.image], prompt="a red circle on a blue background", width=64, height=64,
                    steps=20, denoising_strength=0.4, seed=8)
print("img2img", again.image.size, "seeds", again.info["all_seeds"])
up = api.extra_single_image(image=result.image, upscaler_1=webuiapi.Upscaler.Lanczos, upscaling_resize=2)
print("extras", up.image.size)
print("png_info:", api.png_info(result.image).info.replace("\n", " | "))
print("models", [m["title"] for m in api.get_sd_models()], "options model", api.get_options()["sd_model_checkpoint"])
api.util_set_model("shapes")
print("samplers", len(api.get_samplers()), "progress", api.get_progress()["progress"])
