"""Options shared by `chat` and `generate`, and loading the model they name."""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import typer

from mlx_qwen3next.checkpoints import hub

from .console import err

MODEL = typer.Argument(None, help="Model folder, name in the models folder, or Hub repo id "
                                  "(default: the newest converted model).")


@dataclass
class GenerationOptions:
    """The options `chat` and `generate` share (see `generation_options`)."""

    system: Optional[str] = None
    max_tokens: Optional[int] = None
    temperature: Optional[float] = None
    top_p: Optional[float] = None
    top_k: Optional[int] = None
    min_p: Optional[float] = None
    presence_penalty: Optional[float] = None
    seed: Optional[int] = None
    mtp: Optional[bool] = None
    draft_tokens: int = 1
    dtype: Optional[str] = None
    distributed: Optional[str] = None
    split: Optional[str] = None
    tools: Optional[Path] = None
    tool_list: Optional[list] = None  # read from `tools` by check()

    def sampling(self) -> dict:
        names = ("temperature", "top_p", "top_k", "min_p", "presence_penalty", "seed")
        return {k: getattr(self, k) for k in names if getattr(self, k) is not None}

    def check(self):
        """Bad values fail here, before the model loads (ValueError, one line)."""
        from mlx_qwen3next.checkpoints.loading import check_dtype
        from mlx_qwen3next.generation.sampling import CARD_DEFAULTS, SamplingConfig

        SamplingConfig(**{**CARD_DEFAULTS, **self.sampling()})
        check_dtype(self.dtype)
        check_distributed(self.distributed, self.split)
        if self.tools is not None:
            self.tool_list = read_tools(self.tools)


def read_tools(path: Path) -> list:
    """The tool definitions of a JSON file: a list of OpenAI-style tools, or an object
    with a "tools" list (as in a chat request)."""
    import json

    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot read the tools file ({e.strerror or e})") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not JSON ({e.msg}, line {e.lineno})") from None
    tools = data.get("tools") if isinstance(data, dict) else data
    if not isinstance(tools, list) or not tools:
        raise ValueError(f"{path}: expected a non-empty list of tool definitions")
    for i, t in enumerate(tools):
        fn = t.get("function", t) if isinstance(t, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise ValueError(f"{path}: tool {i} has no function name")
    return tools


DISTRIBUTED = typer.Option(None, "--distributed", help=(
    "Under mlx.launch: pipeline (split the layers across the ranks) or off (each rank "
    "alone) (default: pipeline when there is more than one rank)."))
SPLIT = typer.Option(None, "--split", help=(
    "Layers per rank under mlx.launch: even, or counts like 24,24 (default: by each "
    "rank's available memory)."))

_SHARED = {
    "system": (Optional[str], typer.Option(None, "--system", "-s", help="System prompt (default: none).")),
    "max_tokens": (Optional[int], typer.Option(None, "--max-tokens", "-m", min=1,
                                               help="Stop a reply after this many tokens (default 512 in generate, 1024 in chat).")),
    "temperature": (Optional[float], typer.Option(None, "--temperature", "--temp", "-t",
                                                  help="0 is greedy (default 0.7).")),
    "top_p": (Optional[float], typer.Option(None, "--top-p", help="Nucleus sampling (default 0.8).")),
    "top_k": (Optional[int], typer.Option(None, "--top-k", help="Top-k sampling, 0 off (default 20).")),
    "min_p": (Optional[float], typer.Option(None, "--min-p", help="Min-p sampling, 0 off (default 0).")),
    "presence_penalty": (Optional[float], typer.Option(None, "--presence-penalty",
                                                       help="-2 to 2; above 0 discourages repeats (default 0).")),
    "seed": (Optional[int], typer.Option(None, "--seed", help="Random seed for sampling, 0 to 2**64 - 1 (default: none).")),
    "mtp": (Optional[bool], typer.Option(None, "--mtp/--no-mtp", help=(
        "Speculative decoding with the MTP head (default: on when the model has one)."))),
    "draft_tokens": (int, typer.Option(1, "--draft-tokens", min=1, max=4,
                                       help="Tokens the MTP head drafts per step.")),
    "tools": (Optional[Path], typer.Option(None, "--tools", help=(
        "JSON file of tool definitions (OpenAI format) for the chat template (default: none)."))),
    "dtype": (Optional[str], typer.Option(None, "--dtype", help="Cast float weights: bfloat16, float16 or float32 (default: as stored).")),
    "distributed": (Optional[str], DISTRIBUTED),
    "split": (Optional[str], SPLIT),
}


def check_distributed(mode: Optional[str], split: Optional[str]):
    from mlx_qwen3next.distributed.group import MODES
    from mlx_qwen3next.distributed.split import parse_split

    if mode is not None and mode not in MODES:
        raise ValueError(f"--distributed must be one of {', '.join(MODES)}, not {mode!r}")
    parse_split(split)


def generation_options(command):
    """Give `command` the shared options; it receives them as `opts: GenerationOptions`."""
    sig = inspect.signature(command)
    own = [p for name, p in sig.parameters.items() if name != "opts"]
    shared = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind)
              for name, (kind, option) in _SHARED.items()]

    @functools.wraps(command)
    def wrapper(**kwargs):
        opts = GenerationOptions(**{name: kwargs.pop(name) for name in _SHARED})
        opts.check()
        return command(**kwargs, opts=opts)

    wrapper.__signature__ = sig.replace(parameters=own + shared)
    wrapper.__annotations__ = {k: v for k, v in command.__annotations__.items() if k != "opts"}
    return wrapper


def pick_model(name: Optional[str]) -> Path:
    if name:
        return hub.resolve(name)
    found = hub.default_model()
    if found is None:
        raise hub.HubError(
            "no model here yet: try `qwen3next demo` (tiny, random), or `qwen3next convert "
            f"{hub.DEFAULT_REPO}` to download and convert the real one")
    return found.path


def open_model(name: Optional[str], dtype: Optional[str] = None, mtp: Optional[bool] = None,
               split: Optional[str] = None):
    """(path, model, tokenizer), loaded under a spinner on stderr; this rank's part of
    it when the model is split across ranks (`ranks.join` first)."""
    from mlx_qwen3next import load
    from mlx_qwen3next.distributed import current, load_pipelined

    path = pick_model(name)
    link = current()
    with err.status(f"loading {path.name} ...", spinner="dots"):
        if link is None:
            model, tokenizer = load(path, dtype=dtype, mtp=mtp is not False)
        else:
            model, tokenizer = load_pipelined(path, link, split, dtype, mtp is not False)
    if link is not None:
        from .ranks import describe_ranks

        describe_ranks(model)
    return path, model, tokenizer
