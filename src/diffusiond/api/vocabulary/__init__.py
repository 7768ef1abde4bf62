"""Vocabularies several dialects share (A1111 names, later ComfyUI's), kept out of any one dialect."""
