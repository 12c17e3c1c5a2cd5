"""A config.json the model cannot run is refused before any weight is read: one
ConfigError naming config.json and the field, and one line at the CLI."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from cli_support import one_line_error
from mlx_qwen3next import ConfigError, load_model
from mlx_qwen3next.cli.app import app


@pytest.mark.parametrize("field, value, words", [
    ("hidden_size", "64", "hidden_size must be a positive integer, got '64'"),
    ("head_dim", 0, "head_dim must be a positive integer, got 0"),
    ("num_hidden_layers", -2, "num_hidden_layers must be a positive integer"),
    ("rms_norm_eps", float("nan"), "rms_norm_eps must be a finite number > 0, got nan"),
    ("rms_norm_eps", -1e-6, "rms_norm_eps must be a finite number > 0"),
    ("rope_theta", "big", "rope_theta must be a finite number > 0"),
    ("num_experts_per_tok", 99, "num_experts_per_tok (99) must be between 1 and num_experts"),
    ("num_attention_heads", 3, "num_attention_heads must be a multiple of num_key_value_heads"),
    ("linear_num_value_heads", 3, "linear_num_value_heads must be a multiple"),
    ("full_attention_interval", 0, "full_attention_interval must be a positive integer"),
    ("tie_word_embeddings", "no", "tie_word_embeddings must be true or false"),
    ("mlp_only_layers", [99], "mlp_only_layers must list layer numbers below"),
    ("partial_rotary_factor", 2.0, "partial_rotary_factor must be <= 1"),
    ("eos_token_id", 10**6, "token ids must be integers below vocab_size"),
    ("rope_scaling", "yarn", "rope_scaling must be an object"),
])
def test_bad_config_is_one_clear_error(tiny_checkpoint, tmp_path, field, value, words):
    broken = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, broken)
    config = json.loads((broken / "config.json").read_text())
    config[field] = value
    (broken / "config.json").write_text(json.dumps(config))
    for shard in broken.glob("*.safetensors"):
        shard.write_bytes(b"")  # a weight read would fail differently
    with pytest.raises(ConfigError) as e:
        load_model(broken)
    message = str(e.value)
    assert message.startswith(f"{broken / 'config.json'}: ") and words in message, message
    result = CliRunner().invoke(app, ["info", str(broken)])
    assert result.exit_code == 1 and words in one_line_error(result)
