"""Gated DeltaNet delta-rule kernels behind two entry points.

reference.py is the token-by-token oracle; chunked.py the long-prompt path;
decode.py the few-token path and the per-token states that rewinding needs;
dispatch.py holds gated_delta and the policy that picks its path per call;
gated_delta_steps (a verify) is decode.py's on every device.
"""

from .decode import gated_delta_steps
from .dispatch import gated_delta

__all__ = ["gated_delta", "gated_delta_steps"]
