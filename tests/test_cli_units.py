"""The CLI's pieces on their own: markdown blocks, slash commands, input blocks,
parameter counts and memory, the stats line, error lines, download progress."""

from __future__ import annotations

import io

import mlx_qwen3next  # noqa: F401  (OpenBLAS before mlx)
import mlx.core as mx
import pytest
from rich.console import Console
from rich.progress import Progress
from typer.testing import CliRunner

from cli_support import tiny_source
from mlx_qwen3next import ModelConfig
from mlx_qwen3next.cli import errors, info, sizing, slash
from mlx_qwen3next.cli.lineinput import PlainReader
from mlx_qwen3next.checkpoints.progress import tqdm_for
from mlx_qwen3next.cli.render import MarkdownStream, split_finished
from mlx_qwen3next.cli.stats import stats_line

FENCE = "`" * 3


@pytest.mark.parametrize("text, done", [
    ("one line, no end", ""),
    ("para one\n\npara two", "para one\n\n"),
    ("a\n\nb\n\nc\n", "a\n\nb\n\n"),
    (f"intro\n\n{FENCE}py\nx = 1\n\ny = 2\n", "intro\n\n"),  # no cut inside a fence
    (f"{FENCE}py\nx = 1\n\ny = 2\n{FENCE}\nafter", f"{FENCE}py\nx = 1\n\ny = 2\n{FENCE}\n"),
    (f"{FENCE}\nopen fence, blank line:\n\n", ""),
])
def test_split_finished(text, done):
    finished, tail = split_finished(text)
    assert finished == done and finished + tail == text


def test_markdown_stream_renders_blocks():
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=60, color_system=None)
    doc = f"# Title\n\nSome *emphasis* and `list[int]`.\n\n{FENCE}python\nprint(1)\n\nx = [2]\n{FENCE}\n\nend"
    stream = MarkdownStream(console)
    for i in range(0, len(doc), 3):
        stream.feed(doc[i:i + 3])
    stream.finish()
    final = buf.getvalue()
    assert "Title" in final and "list[int]" in final and "x = [2]" in final
    assert "*emphasis*" not in final.split("Title")[-1].split("end")[-1]
    assert stream.pending == ""


def test_slash_parsing():
    assert slash.parse("hello") is None
    assert slash.parse("//not a command") is None
    assert slash.message_text("//not a command") == "/not a command"
    assert slash.parse("/save  my chat.json ") == ("save", "my chat.json")
    assert slash.parse("/QUIT") == ("exit", "")
    with pytest.raises(slash.SlashError, match="unknown command /frob"):
        slash.parse("/frob")
    assert [slash.parse_value(v) for v in ("0.7", "20", "none", "abc")] == [0.7, 20, None, "abc"]
    assert all(f"/{name}" in slash.help_text() for name in slash.COMMANDS)


def test_plain_reader_blocks():
    text = 'hi\n"""\nline one\n\nline two\n"""\n"""one-liner"""\n'
    reader = PlainReader(io.StringIO(text), io.StringIO())
    assert reader.read() == "hi"
    assert reader.read() == "line one\n\nline two"
    assert reader.read() == "one-liner"
    assert reader.read() is None


def test_parameter_count_matches_the_checkpoint(tmp_path):
    src = tiny_source(tmp_path / "tiny")
    tensors = {}
    for shard in src.glob("*.safetensors"):
        tensors.update(mx.load(str(shard)))
    main = sum(v.size for k, v in tensors.items() if not k.startswith("mtp."))
    mtp = sum(v.size for k, v in tensors.items() if k.startswith("mtp."))
    count = sizing.count_params(ModelConfig.from_file(src))
    assert (count.total, count.mtp) == (main, mtp)
    experts = sum(v.size for k, v in tensors.items() if ".experts." in k and k.startswith("model."))
    assert count.experts == experts
    assert count.active == main - experts + experts * 2 // 8  # top 2 of 8


def test_real_model_numbers():
    cfg = ModelConfig(num_nextn_predict_layers=1)  # the defaults are the real model's
    count = sizing.count_params(cfg)
    assert 79e9 < count.total < 81e9 and 3e9 < count.active < 4e9
    assert sizing.state_bytes(cfg, 1)["kv"] == 24576  # bytes per token, as the model card says
    need = sizing.memory_need(45 * 10**9, cfg, 32768)
    assert 49e9 < need < 51e9


def test_info_says_when_it_does_not_fit(tmp_path, monkeypatch):
    from mlx_qwen3next.cli.app import app

    src = tiny_source(tmp_path / "tiny")
    monkeypatch.setattr(info, "machine_memory", lambda: (1000, "available"))
    result = CliRunner().invoke(app, ["info", str(src), "--context", "8"])
    assert result.exit_code == 0
    assert "does NOT fit" in result.stdout


def test_stats_line():
    # 40 tokens, 16 from drafts: 24 forwards, the 23 after the first drafting 2 each
    line = stats_line(12, 0.25, 40, 33.3, 100, 1000, from_drafts=16, draft_tokens=2, stopped=True)
    assert line == ("12 prompt tokens, first token after 0.25 s · 40 tokens at 33.3 tok/s · "
                    "context 100 of 1,000 (10.0%) · MTP acceptance 35%, 1.67 tokens per forward"
                    " · stopped")
    one = stats_line(1, 0.02, 1, 9.0)
    assert one == "1 prompt token, first token after 0.02 s · 1 token at 9.0 tok/s"


def test_error_lines():
    assert errors.describe(FileNotFoundError(2, "No such file or directory", "/x")) == \
        "/x: No such file or directory"
    assert errors.describe(ValueError("bad\nsecond line")) == "bad"
    assert errors.describe(RuntimeError("boom")) == "RuntimeError: boom"


def test_download_progress_adapter():
    progress = Progress(console=Console(file=io.StringIO()))
    cls = tqdm_for(progress)
    files = cls(total=3, desc="Fetching 3 files")
    data = cls(total=0, desc="Reconstructing", unit="B")
    ignored = cls(total=0, desc="Downloading bytes", unit="B")
    data.total = 1000
    data.update(600)
    ignored.update(600)
    files.update(2)
    task = progress.tasks[0]
    assert (task.completed, task.total) == (600, 1000)
    assert task.description == "downloading (2/3 files)"
    quiet = tqdm_for(None)(total=5, unit="B")
    quiet.update(5)
    assert quiet.n == 5
