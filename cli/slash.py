"""The chat's slash commands: their help and how a line is split into one."""

from __future__ import annotations

from typing import Optional

COMMANDS = {
    "help": "this list",
    "system": "/system TEXT sets the system prompt (and clears the chat); /system alone shows it",
    "clear": "forget the conversation (keeps the system prompt)",
    "undo": "take back your last message and its reply",
    "retry": "answer your last message again",
    "tool": "/tool TEXT gives TEXT as the result of the tool the model called; it answers",
    "save": "/save FILE writes the conversation as JSON",
    "load": "/load FILE reads a conversation saved with /save",
    "save-cache": "/save-cache FILE writes the conversation with its cache (resumes with no prefill)",
    "load-cache": "/load-cache FILE resumes a conversation saved with /save-cache",
    "stats": "context used, speed, MTP acceptance, sampling settings",
    "set": "/set KEY VALUE changes a sampling setting (temperature, top_p, top_k, min_p, "
           "presence_penalty, repetition_penalty, seed, max_tokens)",
    "exit": "leave (Ctrl-D works too)",
}
ALIASES = {"quit": "exit", "q": "exit", "?": "help", "reset": "clear", "h": "help"}


class SlashError(ValueError):
    pass


def parse(line: str) -> Optional[tuple[str, str]]:
    """(command, argument) for a slash command, None for an ordinary message.

    `//text` sends `/text` as a message.
    """
    if not line.startswith("/") or line.startswith("//"):
        return None
    head, _, arg = line[1:].strip().partition(" ")
    name = ALIASES.get(head.lower(), head.lower())
    if name not in COMMANDS:
        raise SlashError(f"unknown command /{head} (type /help)")
    return name, arg.strip()


def message_text(line: str) -> str:
    return line[1:] if line.startswith("//") else line


def parse_value(text: str):
    """'0.7' -> 0.7, '20' -> 20, 'none' -> None, else the text."""
    low = text.lower()
    if low in ("none", "null", "off"):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def help_text() -> str:
    lines = [f"/{name:<7} {doc}" for name, doc in COMMANDS.items()]
    lines.append("Enter sends; Alt+Enter (or Esc, Enter) starts a new line; start with \"\"\" "
                 "for a block that ends at \"\"\". Ctrl-C stops a reply, Ctrl-D leaves.")
    return "\n".join(lines)
