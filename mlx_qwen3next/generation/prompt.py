"""Turn what the user passed (text, bytes, token ids, chat messages) into checked token ids."""

from __future__ import annotations

import operator
from typing import Optional, Sequence

import mlx.core as mx


def check_text(text: str, what: str = "prompt") -> str:
    """Reject strings that are not valid Unicode (lone surrogates from bad bytes)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(
            f"{what} is not valid Unicode text (undecodable character at position {e.start})"
        ) from None
    return text


def decode_bytes(data: bytes, what: str = "prompt") -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{what} is not valid UTF-8 (bad byte at position {e.start})") from None


ROLES = ("system", "user", "assistant", "tool")


def check_messages(messages) -> list[dict]:
    """Chat messages: dicts with a known role and text content (an assistant message
    may carry tool_calls instead)."""
    if not isinstance(messages, (list, tuple)) or not messages:
        raise ValueError("messages must be a non-empty list")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m:
            raise ValueError(f"message {i} must be a dict with 'role' and 'content'")
        if m["role"] not in ROLES:
            raise ValueError(f"message {i} has role {m['role']!r} (expected one of "
                             f"{', '.join(ROLES)})")
        content = m.get("content")
        if content is None and not (m["role"] == "assistant" and m.get("tool_calls")):
            raise ValueError(f"message {i} has no content")
        if content is not None and not isinstance(content, str):
            raise ValueError(f"message {i}: content must be text, got {type(content).__name__}")
        if content is not None:
            check_text(content, f"message {i}")
    return list(messages)


def render_chat(tokenizer, messages: Sequence[dict], tools=None,
                add_generation_prompt: bool = True) -> str:
    """The chat template's text for `messages` (ChatML for Qwen3-Next)."""
    kwargs = {"tools": tools} if tools else {}
    try:
        return tokenizer.apply_chat_template(
            check_messages(messages), tokenize=False,
            add_generation_prompt=add_generation_prompt, **kwargs)
    except ValueError:
        raise
    except Exception as e:  # jinja's errors, and what a template raises itself
        raise ValueError(f"the chat template failed on these messages ({e})") from None


def encode_text(tokenizer, text: str) -> list[int]:
    """Token ids of `text`, special tokens (<|im_start|> ...) parsed, no BOS added."""
    return list(tokenizer.encode(check_text(text), add_special_tokens=False))


def encode_prompt(tokenizer, prompt, vocab_size: int, tools=None) -> list[int]:
    """str (raw text) | bytes | list[int] | mx.array | list of message dicts -> ids."""
    if isinstance(prompt, (bytes, bytearray)):
        prompt = decode_bytes(bytes(prompt))
    if isinstance(prompt, str):
        ids = encode_text(tokenizer, prompt)
    elif isinstance(prompt, mx.array):
        ids = prompt.reshape(-1).tolist()
    elif isinstance(prompt, (list, tuple)) and prompt and isinstance(prompt[0], dict):
        ids = encode_text(tokenizer, render_chat(tokenizer, prompt, tools))
    elif isinstance(prompt, (list, tuple)):
        ids = list(prompt)
    else:
        raise ValueError(
            f"prompt must be text, token ids or a list of messages, not {type(prompt).__name__}"
        )
    return check_ids(ids, vocab_size)


def check_ids(ids: list, vocab_size: int) -> list[int]:
    if not ids:
        raise ValueError("prompt is empty")
    out = []
    for t in ids:
        try:
            t = operator.index(t) if not isinstance(t, bool) else None
        except TypeError:
            t = None
        if t is None:
            raise ValueError("token ids must be integers")
        if not 0 <= t < vocab_size:
            raise ValueError(f"token id {t} is outside the vocabulary (0..{vocab_size - 1})")
        out.append(t)
    return out


def check_stop(stop) -> list[str]:
    if stop is None:
        return []
    if not isinstance(stop, (str, list, tuple)):
        raise ValueError(f"stop must be text or a list of texts, got {stop!r}")
    stops = [stop] if isinstance(stop, str) else list(stop)
    for s in stops:
        if not isinstance(s, str) or not s:
            raise ValueError(f"stop strings must be non-empty text, got {s!r}")
        check_text(s, "stop string")
    return stops


def check_max_tokens(max_tokens: Optional[int]) -> Optional[int]:
    if max_tokens is None:
        return None
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise ValueError(f"max_tokens must be a positive integer (or None), got {max_tokens!r}")
    return max_tokens
