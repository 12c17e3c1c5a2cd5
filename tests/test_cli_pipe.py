"""`generate` composes in a shell pipe: stdin in, JSON out, read by the next program."""

from __future__ import annotations

import shlex
import subprocess
import sys

from cli_support import CLI, converted, isolated_env


def test_generate_in_a_shell_pipe(tmp_path):
    model = converted(tmp_path, rambling=True)
    cli = " ".join(shlex.quote(a) for a in CLI)
    reader = f"{shlex.quote(sys.executable)} -c " + shlex.quote(
        "import json, sys; d = json.load(sys.stdin); "
        "print(d['generation_tokens'], d['finish_reason'], len(d['text']) > 0)")
    command = f"echo hi | {cli} generate {shlex.quote(str(model))} --json -m 7 --temp 0 | {reader}"
    result = subprocess.run(["bash", "-o", "pipefail", "-c", command], env=isolated_env(tmp_path),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["7", "length", "True"]
    assert result.stderr.strip() == ""  # nothing but the JSON went anywhere


def test_ctrl_c_during_generate_json_prints_the_partial_result(tmp_path):
    """A real SIGINT to `generate --json` on a model that never stops: the JSON record
    still comes, with what was generated and finish_reason "interrupted"."""
    import json
    import signal
    import time

    model = converted(tmp_path, rambling=True)
    env = isolated_env(tmp_path)
    for wait in (4, 8, 16):  # the signal must land after loading, while tokens stream
        child = subprocess.Popen(CLI + ["generate", str(model), "--json", "-m", "1000000",
                                        "--temp", "0", "-p", "Hello"],
                                 env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True)
        time.sleep(wait)
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=60)
        if out.strip() and json.loads(out)["generation_tokens"]:
            break  # else it landed in the prefill: the record came, with no tokens yet
    record = json.loads(out)
    assert child.returncode == 130 and err.strip() == "qwen3next: error: interrupted"
    assert record["finish_reason"] == "interrupted"
    assert record["generation_tokens"] > 0 and record["text"]


def test_download_error_is_the_first_line(tmp_path):
    """No progress bar drawn into a pipe, so no blank line before the error."""
    env = isolated_env(tmp_path, HF_HUB_OFFLINE="1")
    result = subprocess.run(CLI + ["download", "Qwen/Some-Model"], env=env, text=True,
                            capture_output=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.startswith("qwen3next: error: Qwen/Some-Model is not"), result.stderr
