"""Gated DeltaNet delta-rule kernels behind two entry points.

reference.py is the token-by-token oracle; chunked.py the long-prompt path;
decode.py the few-token path and the per-token states that rewinding needs;
dispatch.py holds the entry points and the rule that picks a path per call.
"""

from .dispatch import gated_delta, gated_delta_steps

__all__ = ["gated_delta", "gated_delta_steps"]
