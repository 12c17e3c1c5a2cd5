"""Builders for the tests and the demo: tiny checkpoints in the real Hub layout, a
small ChatML tokenizer, and the demo's model and script."""
