"""Training code: the bundled `shapes` base model (and later LoRA)."""
