"""A small byte-level BPE tokenizer with Qwen's ChatML special tokens.

Tiny test checkpoints and the demo need a tokenizer that loads through
transformers / mlx-lm like the real one (tokenizer.json + tokenizer_config.json
with a chat template) without reaching the Hub. Training is deterministic.
"""

from __future__ import annotations

import json
from pathlib import Path

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<tool_call>", "</tool_call>"]

# ChatML as Qwen3-Next Instruct writes it: optional system turn, tools listed in
# the system turn, and `<tool_call>` JSON blocks for assistant tool calls.
CHAT_TEMPLATE = (
    "{% if tools %}"
    "<|im_start|>system\n"
    "{% if messages[0].role == 'system' %}{{ messages[0].content }}\n\n{% endif %}"
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "<tools>"
    "{% for tool in tools %}\n{{ tool | tojson }}{% endfor %}"
    "\n</tools>\n\nFor each function call, return a json object within "
    "<tool_call></tool_call> XML tags.<|im_end|>\n"
    "{% elif messages[0].role == 'system' %}"
    "<|im_start|>system\n{{ messages[0].content }}<|im_end|>\n"
    "{% endif %}"
    "{% for message in messages %}"
    "{% if message.role == 'system' %}{% continue %}{% endif %}"
    "<|im_start|>{{ message.role }}\n{{ message.content or '' }}"
    "{% if message.tool_calls %}"
    "{% for call in message.tool_calls %}"
    "\n<tool_call>\n{\"name\": \"{{ call.function.name }}\", \"arguments\": "
    "{{ call.function.arguments | tojson }}}\n</tool_call>"
    "{% endfor %}"
    "{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_CORPUS = """\
The quick brown fox jumps over the lazy dog. Qwen3-Next is a hybrid model with
gated DeltaNet layers and gated attention layers, each followed by a mixture of
experts. Hello! How are you today? I am fine, thank you. What is the capital of
France? Paris is the capital of France. Write a short poem about the sea.
def main():\n    print("hello world")\n    return 0\n
Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000. Caf\u00e9, na\u00efve, \u4e2d\u6587, \U0001f600.
system user assistant tool You are a helpful assistant.
"""


def write_tokenizer(path: str | Path, vocab_size: int = 500) -> dict[str, int]:
    """Train and save the tokenizer into `path`; return the special token ids."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([_CORPUS] * 4, trainer=trainer)
    tok.add_special_tokens(SPECIAL_TOKENS)
    path = Path(path)
    tok.save(str(path / "tokenizer.json"))
    ids = {t: tok.token_to_id(t) for t in SPECIAL_TOKENS}
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "model_max_length": 262144,
        "chat_template": CHAT_TEMPLATE,
        "added_tokens_decoder": {
            str(i): {"content": t, "special": True} for t, i in ids.items()
        },
    }
    (path / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return ids
