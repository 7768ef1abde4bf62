"""Stability.ai REST API v1 (seed 003, specs/stability-v1.yaml)."""
