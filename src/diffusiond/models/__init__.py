"""The model registry: checkpoints, LoRAs, embeddings, upscalers and their aliases."""
