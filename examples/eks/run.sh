#!/usr/bin/env bash
# The EKS solution's own sample requests (its test/<version>/*.json, the image links pointed at a
# local server), sent as its test/run.sh sends them. Needs a server that may fetch from loopback:
#   DIFFUSIOND_WEBHOOK_ALLOW_HOSTS=127.0.0.1 .venv/bin/diffusiond serve
#   (cd some/folder/with/cat.png && python3 -m http.server 8765 --bind 127.0.0.1)
#   API_ENDPOINT=http://127.0.0.1:7860/ API_KEY=sk-dfd-... examples/eks/run.sh [v1alpha2|v1alpha1] [sdwebui|comfyui]
set -u
cd "$(dirname "$0")"
API_VERSION=${1:-v1alpha2}
RUNTIME_TYPE=${2:-sdwebui}
post() { curl -s -X POST "$1" -H 'Content-Type: application/json' -H "x-api-key: ${API_KEY}" -d @"$2"; echo; }
if [ "$RUNTIME_TYPE" = comfyui ]; then
  post "${API_ENDPOINT}/${API_VERSION}" "${API_VERSION}/pipeline.json"
elif [ "$API_VERSION" = v1alpha2 ]; then
  for f in t2i i2i extra-single-image; do post "${API_ENDPOINT}/${API_VERSION}/" "${API_VERSION}/$f.json"; done
else
  for f in t2i i2i t2v; do post "${API_ENDPOINT}/${API_VERSION}/" "${API_VERSION}/$f.json"; done
fi
