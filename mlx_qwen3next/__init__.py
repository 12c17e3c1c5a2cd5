"""mlx-qwen3next: Qwen3-Next-80B-A3B on MLX."""

from ._blas import active_blas, load_openblas

load_openblas()  # must run before the first `import mlx.core`

__version__ = "0.1.0"

from .checkpoint import LoadError  # noqa: E402
from .config import ConfigError, ModelConfig  # noqa: E402
from .loading import load, load_model  # noqa: E402
from .model import Model  # noqa: E402

__all__ = [
    "ConfigError",
    "LoadError",
    "Model",
    "ModelConfig",
    "active_blas",
    "load",
    "load_model",
]
