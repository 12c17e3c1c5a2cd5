"""The app's two rich consoles: results on stdout, progress and notes on stderr.

Both look up sys.stdout / sys.stderr when they print (tests swap them). Text
that came from a model or a user is always printed with markup off.
"""

from __future__ import annotations

from rich.console import Console

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def note(text: str, style: str = "dim"):
    """A line for the user on stderr (never mixed into piped output)."""
    err.print(text, style=style, markup=False)


def size(n: float) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"


def count(n: float) -> str:
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(int(n))
