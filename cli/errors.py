"""Every failure the user can cause ends as one line on stderr and a non-zero exit.

`OneLineErrors` is the Typer group class of the app: it runs click in
non-standalone mode and turns usage errors (exit 2), Ctrl-C (exit 130) and any
exception (exit 1) into `qwen3next: error: ...`. QWEN3NEXT_DEBUG=1 shows the
traceback of unexpected errors instead.
"""

from __future__ import annotations

import os
import sys

from typer.core import TyperGroup
from typer import exceptions as typer_exceptions
from typer._click import exceptions as click_exceptions


def say_error(message: str, prefix: str = ""):
    if prefix is None:
        return
    text = " ".join(str(message).split()) or "failed"
    print(f"qwen3next: error: {prefix}{text}", file=sys.stderr, flush=True)


def follower_prefix(e: BaseException):
    """On ranks other than 0 of a split model: None (stay quiet) for the bad-input
    errors rank 0 reports too, else "rank N: "; "" when running alone."""
    from mlx_qwen3next.distributed import PeerLost, rank

    r = rank()
    if r == 0 or isinstance(e, PeerLost):  # PeerLost names its rank already
        return ""
    return None if type(e) is ValueError else f"rank {r}: "


def describe(e: BaseException) -> str:
    """One line for an exception (the library's errors already are one line)."""
    from mlx_qwen3next.checkpoints.hub import describe_hub_error

    if type(e).__module__.startswith(("huggingface_hub", "httpx")):
        return describe_hub_error(e, "the model")
    if isinstance(e, OSError) and e.strerror:
        where = f"{e.filename}: " if e.filename else ""
        return f"{where}{e.strerror}"
    text = str(e).strip().splitlines()
    if isinstance(e, (ValueError, OSError, MemoryError, LookupError)) and text:
        return text[0]
    return f"{type(e).__name__}: {text[0] if text else 'no message'}"


class OneLineErrors(TyperGroup):
    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        code = self._run(args, prog_name or "qwen3next", complete_var, extra)
        if standalone_mode:
            sys.exit(code)
        return code

    def _run(self, args, prog_name, complete_var, extra) -> int:
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click_exceptions.UsageError as e:
            hint = f" (see `{e.ctx.command_path} --help`)" if e.ctx is not None else ""
            say_error(e.format_message() + hint)
            return e.exit_code
        except click_exceptions.ClickException as e:
            say_error(e.format_message())
            return e.exit_code
        except (typer_exceptions.Abort, KeyboardInterrupt):
            say_error("interrupted")
            return 130
        except typer_exceptions.Exit as e:
            return e.exit_code
        except Exception as e:  # noqa: BLE001  (the one place errors are reported)
            if os.environ.get("QWEN3NEXT_DEBUG"):
                raise
            say_error(describe(e), follower_prefix(e))
            return 1
        if rv == 130:  # typer turns Ctrl-C into Exit(130)
            say_error("interrupted")
        return rv if isinstance(rv, int) else 0
