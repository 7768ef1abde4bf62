"""Webhooks: the outbox dispatcher, Standard Webhooks signing, SSRF-safe delivery with retries."""
