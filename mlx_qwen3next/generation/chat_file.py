"""A saved chat on disk: JSON with the messages, tools and settings, written whole or not
at all (a temporary file renamed over the target), and read back checked in full."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

from .prompt import check_messages

FORMAT = "mlx-qwen3next-chat"


def write_chat(path, messages, tools, settings: dict):
    data = {"format": FORMAT, "version": 1, "messages": messages, "tools": tools,
            "settings": settings}
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False))
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise ValueError(f"{path}: cannot save the chat ({e.strerror or e}); "
                         "a previous save there is unchanged") from None


def read_chat(path, known_settings: set) -> tuple[list, Optional[list], dict]:
    """(messages, tools, settings) of a saved chat, each checked; ValueError naming it."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot read chat ({e})") from None
    try:
        return _checked(data, known_settings)
    except ValueError as e:
        raise ValueError(f"{path}: not a saved chat ({e})") from None


def _checked(data, known_settings: set):
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"format is not {FORMAT!r}")
    messages = check_messages(data.get("messages"))
    tools = data.get("tools")
    if tools is not None and not (isinstance(tools, list)
                                  and all(isinstance(t, dict) for t in tools)):
        raise ValueError("tools must be a list of tool definitions")
    settings = data.get("settings") or {}
    if not isinstance(settings, dict):
        raise ValueError("settings must be an object")
    unknown = set(settings) - known_settings
    if unknown:
        raise ValueError(f"unknown setting {sorted(unknown)[0]!r}")
    return messages, tools, settings
