"""`qwen3next serve`: an OpenAI-compatible HTTP server on the generation engine."""

from .app import make_app
from .engine import Engine

__all__ = ["Engine", "make_app"]
