"""Checkpoints: config and safetensors shards read and checked, the one Hub-to-MLX name
mapping, loading (fitted to the device), the Hub and the models folder, memory
sizing, and the layer-at-a-time forward for models bigger than memory."""

from .loading import load, load_model
from .memory import InsufficientMemoryError, check_fits, wired_limit
from .shards import LoadError
from .tokenizer import load_tokenizer

__all__ = ["InsufficientMemoryError", "LoadError", "check_fits", "load", "load_model",
           "load_tokenizer", "wired_limit"]
