"""Gated DeltaNet delta-rule kernels: one entry point, several paths.

reference.py is the token-by-token oracle; chunked.py the prefill path;
decode.py the few-token ops path; metal.py the Metal decode kernel, guarded
at run time by selfcheck.py; dispatch.py picks among them.
"""

from .dispatch import gated_delta

__all__ = ["gated_delta"]
