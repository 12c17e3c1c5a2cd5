"""Generation: the prompt (encoding, chat template, context limits), sampling, prefill,
the token loop, MTP speculative decoding, streaming text, and ChatSession."""

from .context import context_limit, set_rope_scaling
from .loop import make_token_loop, token_stream
from .prefill import PREFILL_STEP, prefill
from .sampling import SamplingConfig, default_sampling
from .session import ChatSession, SessionStats
from .speculative import MTPStats, speculative_stream
from .stream import GenerationResponse, generate, stream_generate

__all__ = ["PREFILL_STEP", "ChatSession", "GenerationResponse", "MTPStats", "SamplingConfig",
           "SessionStats", "context_limit", "default_sampling", "generate", "make_token_loop",
           "prefill", "set_rope_scaling", "speculative_stream", "stream_generate",
           "token_stream"]
