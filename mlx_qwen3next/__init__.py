"""mlx-qwen3next: Qwen3-Next-80B-A3B on MLX."""

from ._blas import active_blas, load_openblas

load_openblas()  # must run before the first `import mlx.core`

__version__ = "0.1.0"
