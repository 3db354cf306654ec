"""Checkpoint conversion: Hugging Face import / export (`hf`)."""
