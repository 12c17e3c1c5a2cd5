"""The line printed after each reply: time to first token, speed, context, MTP."""

from __future__ import annotations

from typing import Optional


def stats_line(prompt_tokens: int, ttft: float, tokens: int, tps: float,
               context_used: Optional[int] = None, context_max: Optional[int] = None,
               from_drafts: int = 0, stopped: bool = False) -> str:
    parts = [
        f"{prompt_tokens} prompt tokens, first token after {ttft:.2f} s",
        f"{tokens} tokens at {tps:.1f} tok/s",
    ]
    if context_used is not None and context_max:
        parts.append(f"context {context_used:,} of {context_max:,} "
                     f"({100 * context_used / context_max:.1f}%)")
    if from_drafts:
        parts.append(f"MTP: {from_drafts} of {tokens} tokens from accepted drafts "
                     f"({100 * from_drafts / tokens:.0f}%)")
    if stopped:
        parts.append("stopped")
    return " · ".join(parts)
