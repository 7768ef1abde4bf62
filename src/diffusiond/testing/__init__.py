"""Helpers for tests and demos: small real models (`tiny_models`) and pixel checks (`shapes_checks`)."""
