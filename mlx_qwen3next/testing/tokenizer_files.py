"""A small byte-level BPE tokenizer with Qwen's ChatML special tokens.

Tiny test checkpoints and the demo need a tokenizer that loads through
transformers / mlx-lm like the real one (tokenizer.json + tokenizer_config.json
with a chat template) without reaching the Hub. Training is deterministic.
"""

from __future__ import annotations

import json
from pathlib import Path

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Added tokens that are not special, as in Qwen's tokenizer: decoding keeps them in
# the text, where the server's tool-call parser reads them.
TOOL_TOKENS = ["<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>"]
ADDED_TOKENS = SPECIAL_TOKENS + TOOL_TOKENS

# ChatML as Qwen3-Next Instruct writes it: optional system turn, tools listed in the
# system turn, `<tool_call>` JSON blocks for assistant tool calls, and tool results
# as `<tool_response>` blocks in a user turn (consecutive results share one turn).
# Every newline next to a block tag is an expression: transformers renders with
# trim_blocks, which would eat a literal one.
CHAT_TEMPLATE = (
    "{%- if tools %}"
    "{{- '<|im_start|>system\\n' }}"
    "{%- if messages[0].role == 'system' %}{{- messages[0].content + '\\n\\n' }}{%- endif %}"
    "{{- '# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n"
    "You are provided with function signatures within <tools></tools> XML tags:\\n<tools>' }}"
    "{%- for tool in tools %}{{- '\\n' }}{{- tool | tojson }}{%- endfor %}"
    "{{- '\\n</tools>\\n\\nFor each function call, return a json object with function name "
    "and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n"
    "{\"name\": <function-name>, \"arguments\": <args-json-object>}\\n</tool_call><|im_end|>\\n' }}"
    "{%- elif messages[0].role == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'tool' %}"
    "{%- if loop.first or messages[loop.index0 - 1].role != 'tool' %}"
    "{{- '<|im_start|>user' }}{%- endif %}"
    "{{- '\\n<tool_response>\\n' + (message.content or '') + '\\n</tool_response>' }}"
    "{%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}"
    "{{- '<|im_end|>\\n' }}{%- endif %}"
    "{%- elif message.role != 'system' or not loop.first %}"
    "{{- '<|im_start|>' + message.role + '\\n' + (message.content or '') }}"
    "{%- for call in message.tool_calls or [] %}"
    "{%- set fn = call.function if call.function is defined else call %}"
    "{%- if message.content or not loop.first %}{{- '\\n' }}{%- endif %}"
    "{{- '<tool_call>\\n{\"name\": \"' + fn.name + '\", \"arguments\": ' }}"
    "{%- if fn.arguments is string %}{{- fn.arguments }}{%- else %}{{- fn.arguments | tojson }}"
    "{%- endif %}"
    "{{- '}\\n</tool_call>' }}"
    "{%- endfor %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
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
    """Train the test tokenizer on a small fixed text and save it into `path`; return
    the added tokens' ids."""
    return save_tokenizer(train_bpe([_CORPUS] * 4, vocab_size), path)


def train_bpe(texts, vocab_size: int, pre_tokenizer=None):
    """A byte-level BPE of `vocab_size` learned tokens, then the added tokens.
    `pre_tokenizer` runs before the byte-level split (for example digits one by one)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.pre_tokenizer = (pre_tokenizers.Sequence([pre_tokenizer, byte_level])
                         if pre_tokenizer is not None else byte_level)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tok.add_special_tokens(SPECIAL_TOKENS)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in TOOL_TOKENS])
    return tok


def save_tokenizer(tok, path: str | Path) -> dict[str, int]:
    """tokenizer.json + tokenizer_config.json (with the chat template) into `path`."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tok.save(str(path / "tokenizer.json"))
    ids = {t: tok.token_to_id(t) for t in ADDED_TOKENS}
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "model_max_length": 262144,
        "chat_template": CHAT_TEMPLATE,
        "added_tokens_decoder": {
            str(ids[t]): {"content": t, "special": t in SPECIAL_TOKENS} for t in ADDED_TOKENS
        },
    }
    (path / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return ids
