"""The custom-model API (seed 002): a tenant's own models, trained on its pictures, mixed in predictions."""
