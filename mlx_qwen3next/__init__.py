"""mlx-qwen3next: Qwen3-Next-80B-A3B on MLX."""

from .cpu.blas import active_blas, load_openblas
from .cpu.malloc import tune_malloc

load_openblas()  # must run before the first `import mlx.core`
tune_malloc()  # reuse freed memory instead of page-faulting fresh mmaps

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
from .chat import ChatSession, SessionStats  # noqa: E402
from .generate import GenerationResponse, generate, stream_generate  # noqa: E402
from .long_context import context_limit, set_rope_scaling  # noqa: E402
from .memory import InsufficientMemoryError, check_fits, wired_limit  # noqa: E402
from .sampling import SamplingConfig  # noqa: E402

__all__ += [
    "ChatSession", "GenerationResponse", "InsufficientMemoryError", "SamplingConfig",
    "SessionStats", "check_fits", "context_limit", "generate", "set_rope_scaling",
    "stream_generate", "wired_limit",
]
