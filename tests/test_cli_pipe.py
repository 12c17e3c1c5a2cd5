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
