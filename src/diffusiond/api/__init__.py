"""API dialects: one package per wire format, each a thin translation onto the core."""
