"""A `/v1/jobs` client: a three-stage job (generate, upscale, inpaint) with a signed webhook.

It uploads a mask (the two-step resource flow), submits the job with a `notifyUrl` pointing at a
receiver this script runs on loopback, follows progress over Server-Sent Events, then waits for the
one terminal webhook, verifies its Standard Webhooks signature and saves the images it names.

    DIFFUSIOND_WEBHOOK_ALLOW_HOSTS=127.0.0.1 diffusiond serve      # in one terminal
    python examples/jobs_client.py --key sk-dfd-...                 # in another

The server must be allowed to call the loopback receiver (DIFFUSIOND_WEBHOOK_ALLOW_HOSTS above);
with a public receiver, pass --notify-url instead and check its deliveries there.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import queue
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from PIL import Image, ImageDraw
from standardwebhooks import Webhook

Delivery = tuple[str, dict[str, str]]


def start_receiver(inbox: queue.Queue[Delivery]) -> ThreadingHTTPServer:
    """A webhook receiver on 127.0.0.1: every POST body (with its headers) goes to `inbox`."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0)).decode()
            inbox.put((body, {k.lower(): v for k, v in self.headers.items()}))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def upload_mask(api: httpx.Client, size: int) -> str:
    """Two-step upload: create the resource, then PUT the PNG to its signed URL."""
    mask = Image.new("L", (size, size), 0)
    ImageDraw.Draw(mask).ellipse((size // 4, size // 4, 3 * size // 4, 3 * size // 4), fill=255)
    buf = io.BytesIO()
    mask.save(buf, format="PNG")
    created = api.post("/v1/resource/image", json={"expireSec": 600}).raise_for_status().json()
    httpx.put(created["putUrl"], content=buf.getvalue(), headers=created["headers"]).raise_for_status()
    return str(created["resourceId"])


def stages(model: str, mask_id: str, size: int) -> list[dict[str, Any]]:
    prompt = [{"text": "a red circle on a blue background", "weight": 1}]
    return [
        {"type": "INPUT_INITIALIZE", "inputInitialize": {"seed": "0", "count": "1"}},
        {"type": "DIFFUSION", "diffusion": {"width": str(size), "height": str(size), "prompts": prompt,
                                            "sdModel": model, "steps": "20", "cfgScale": 7}},
        {"type": "IMAGE_TO_UPSCALER", "imageToUpscaler": {"hrUpscaler": "lanczos", "hrScale": 2}},
        {"type": "IMAGE_TO_INPAINT", "imageToInpaint": {
            "maskImageResourceId": mask_id, "maskBlur": 2, "inpaintingFill": "ORIGINAL",
            "diffusion": {"prompts": [{"text": "a green square"}], "steps": "20", "denoisingStrength": 0.8}}},
    ]


def follow(api: httpx.Client, job_id: str) -> dict[str, Any]:
    """Print status and progress from the SSE stream; return the last job object."""
    last: dict[str, Any] = {}
    with api.stream("GET", f"/v1/jobs/{job_id}/events", timeout=None) as events:
        for line in events.iter_lines():
            if not line.startswith("data: ") or line == "data: {}":
                continue
            last = json.loads(line.removeprefix("data: "))
            running = last.get("runningInfo", {}).get("processingImages", [])
            progress = " ".join(f"{p['progress']}%" for p in running)
            waiting = last.get("waitingInfo", {})
            where = f"rank {waiting['queueRank']}/{waiting['queueLen']}" if waiting else progress
            print(f"  {last['status']:8} {where}", flush=True)
    return last


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default=os.environ.get("DIFFUSIOND_URL", "http://127.0.0.1:7860"))
    key = os.environ.get("DIFFUSIOND_API_KEY")
    parser.add_argument("--key", default=key, required=key is None, help="an API key (or DIFFUSIOND_API_KEY)")
    parser.add_argument("--model", default="shapes")
    parser.add_argument("--size", type=int, default=64, help="generated size; the upscaler doubles it")
    parser.add_argument("--out", type=Path, default=Path("jobs-client-out"))
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args()

    api = httpx.Client(base_url=args.url, headers={"Authorization": f"Bearer {args.key}"}, timeout=60)
    secret = api.get("/v1/account/webhook-secret").raise_for_status().json()["webhookSecret"]
    inbox: queue.Queue[Delivery] = queue.Queue()
    receiver = start_receiver(inbox)
    notify_url = f"http://127.0.0.1:{receiver.server_address[1]}/diffusiond"

    # 1. Upload the inpainting mask at the upscaled size
    mask_id = upload_mask(api, 2 * args.size)
    # 2. Submit: requestId makes a retried POST safe
    body = {"requestId": uuid.uuid4().hex, "stages": stages(args.model, mask_id, args.size), "notifyUrl": notify_url}
    response = api.post("/v1/jobs", json=body)
    if response.status_code != 200:
        print(f"refused: {response.status_code} {response.text}", file=sys.stderr)
        return 1
    job = response.json()["job"]
    print(f"job {job['id']}: {job['credits']} credits")
    # 3. Follow progress over SSE
    final = follow(api, job["id"])
    # 4. The terminal webhook: verify the signature, then open the images it names
    while True:
        payload, headers = inbox.get(timeout=args.timeout)
        event = Webhook(secret).verify(payload, headers)  # raises if the signature is wrong
        print(f"webhook {headers['webhook-id']}: {event['type']}")
        if event["data"]["job"]["id"] == job["id"] and event["type"] in ("job.succeeded", "job.failed", "job.canceled"):
            break
    terminal = event["data"]["job"]
    if terminal["status"] != "SUCCESS":
        print(f"job {terminal['status']}: {terminal.get('failedInfo')}", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    for image in terminal["successInfo"]["images"]:
        picture = Image.open(io.BytesIO(httpx.get(image["url"]).raise_for_status().content))
        path = args.out / f"{image['id']}.png"
        picture.save(path)
        print(f"saved {path} ({picture.width}x{picture.height}); SSE said {final['status']}")
    receiver.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
