"""The line printed after each reply: time to first token, speed, context, MTP."""

from __future__ import annotations

from typing import Optional


def stats_line(prompt_tokens: int, ttft: float, tokens: int, tps: float,
               context_used: Optional[int] = None, context_max: Optional[int] = None,
               from_drafts: int = 0, draft_tokens: int = 1, stopped: bool = False) -> str:
    """`from_drafts`: tokens that came from accepted MTP drafts. Each main-model
    forward after the first yields one token of its own plus the drafts it accepted,
    so forwards = tokens - from_drafts and drafted = (forwards - 1) * draft_tokens."""
    parts = [
        f"{plural(prompt_tokens, 'prompt token')}, first token after {ttft:.2f} s",
        f"{plural(tokens, 'token')} at {tps:.1f} tok/s",
    ]
    if context_used is not None and context_max:
        parts.append(f"context {context_used:,} of {context_max:,} "
                     f"({100 * context_used / context_max:.1f}%)")
    if from_drafts:
        forwards = tokens - from_drafts
        drafted = max((forwards - 1) * draft_tokens, from_drafts)
        parts.append(f"MTP acceptance {100 * from_drafts / drafted:.0f}%, "
                     f"{tokens / forwards:.2f} tokens per forward")
    if stopped:
        parts.append("stopped")
    return " · ".join(parts)


def plural(n: int, noun: str) -> str:
    return f"{n:,} {noun}" + ("" if n == 1 else "s")
