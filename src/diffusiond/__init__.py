"""diffusiond: a self-hosted Stable Diffusion platform."""

__version__ = "0.1.0"
