"""Conversion of the original Hub checkpoint to quantized MLX (mlx-lm layout).

    from mlx_qwen3next.quantize import convert, check
    result = convert("Qwen3-Next-80B-A3B-Instruct", "qwen3next-4bit")
    print(result.summary())
"""

from .check import check, compare, format_check
from .convert import DEFAULT_SHARD_BYTES, ConvertResult, convert
from .errors import ConvertError
from .plan import Plan, make_plan
from .recipe import RECIPES, VALID_BITS, QuantSpec, Recipe, make_recipe, parse_size

__all__ = [
    "DEFAULT_SHARD_BYTES",
    "RECIPES",
    "VALID_BITS",
    "ConvertError",
    "ConvertResult",
    "Plan",
    "QuantSpec",
    "Recipe",
    "check",
    "compare",
    "convert",
    "format_check",
    "make_plan",
    "make_recipe",
    "parse_size",
]
