"""The tokenizer and generation settings beside a checkpoint, checked as they load: a
missing or unreadable file, or a chat template that does not render, is one error
naming the file."""

from __future__ import annotations

import json
from pathlib import Path

from ..config import ModelConfig
from .shards import LoadError

VOCABULARY = (("tokenizer.json",), ("vocab.json", "merges.txt"))


def read_json(file: Path) -> dict:
    """A JSON object from `file` ({} if there is no such file)."""
    if not file.is_file():
        return {}
    try:
        data = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LoadError(f"{file}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise LoadError(f"{file}: expected a JSON object, got {type(data).__name__}")
    return data


def generation_config(path: Path) -> dict:
    return read_json(Path(path) / "generation_config.json")


def generation_eos_ids(path: Path) -> list[int]:
    eos = generation_config(path).get("eos_token_id")
    ids = [] if eos is None else (list(eos) if isinstance(eos, list) else [eos])
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise LoadError(f"{path / 'generation_config.json'}: eos_token_id must be token ids, "
                        f"got {eos!r}")
    return ids


def load_tokenizer(path, cfg: ModelConfig):
    """mlx-lm's TokenizerWrapper, the end-of-turn ids of config.json and
    generation_config.json included."""
    from mlx_lm.utils import load_tokenizer as _load

    path = Path(path)
    if not any(all((path / f).is_file() for f in files) for files in VOCABULARY):
        raise LoadError(f"{path / 'tokenizer.json'}: missing (the tokenizer is needed)")
    read_json(path / "tokenizer_config.json")
    eos = set(cfg.eos_token_ids) | set(generation_eos_ids(path))
    try:
        tokenizer = _load(path, eos_token_ids=sorted(eos) or None)
    except Exception as e:  # transformers' and tokenizers' own errors name no file
        raise LoadError(f"{path}: cannot load the tokenizer ({_first_line(e)})") from None
    check_chat_template(tokenizer, path)
    return tokenizer


def check_chat_template(tokenizer, path: Path):
    """Render a two-message chat once, so that a broken template fails here, named."""
    if not getattr(tokenizer, "chat_template", None):
        return
    try:
        tokenizer.apply_chat_template([{"role": "system", "content": "s"},
                                       {"role": "user", "content": "u"}],
                                      tokenize=False, add_generation_prompt=True)
    except Exception as e:  # jinja's TemplateError and whatever the template raises
        raise LoadError(f"{path}: the chat template does not render ({_first_line(e)})") \
            from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__
