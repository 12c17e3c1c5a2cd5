"""mlx-qwen3next: Qwen3-Next-80B-A3B on MLX."""

from .cpu.blas import active_blas, load_openblas
from .cpu.malloc import tune_malloc

load_openblas()  # must run before the first `import mlx.core`
tune_malloc()  # reuse freed memory instead of page-faulting fresh mmaps

__version__ = "0.1.0"

from .checkpoints import (  # noqa: E402
    InsufficientMemoryError, LoadError, check_fits, load, load_model, wired_limit,
)
from .config import ConfigError, ModelConfig  # noqa: E402
from .generation import (  # noqa: E402
    ChatSession, GenerationResponse, SamplingConfig, SessionStats, context_limit, generate,
    set_rope_scaling, stream_generate,
)
from .model import Model  # noqa: E402

__all__ = [
    "ChatSession", "ConfigError", "GenerationResponse", "InsufficientMemoryError", "LoadError",
    "Model", "ModelConfig", "SamplingConfig", "SessionStats", "active_blas", "check_fits",
    "context_limit", "generate", "load", "load_model", "set_rope_scaling", "stream_generate",
    "wired_limit",
]
