"""A `qwen3next serve` process on a free port of 127.0.0.1, for the server tests."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import subprocess
import threading
import time

import openai

from cli_support import CLI, isolated_env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, model, tmp_path, *extra):
        self.port = free_port()
        self.proc = subprocess.Popen(
            CLI + ["serve", str(model), "--port", str(self.port), *map(str, extra)],
            env=isolated_env(tmp_path, PYTHONFAULTHANDLER="1"), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        self.log: list[str] = []
        threading.Thread(target=self._read_log, daemon=True).start()
        for _ in range(600):
            try:
                if self.get("/health")[0] == 200:
                    return
            except OSError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError("server died: " + "".join(self.log))
            time.sleep(0.1)
        raise RuntimeError("server did not start")

    def _read_log(self):
        for line in self.proc.stderr:
            self.log.append(line)

    def request(self, method, path, body=None, headers=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
        conn.request(method, path, body=data, headers={"Content-Type": "application/json",
                                                       **(headers or {})})
        r = conn.getresponse()
        payload = r.read()
        conn.close()
        return r.status, json.loads(payload) if payload else None, dict(r.getheaders())

    def get(self, path):
        return self.request("GET", path)[:2]

    def client(self, key="none"):
        return openai.OpenAI(base_url=f"http://127.0.0.1:{self.port}/v1", api_key=key,
                             max_retries=0)

    def stop(self) -> int:
        """SIGTERM, and the exit status; a server still up after 60 s is aborted, and the
        failure shows where its threads were (faulthandler) and its log."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGABRT)
            self.proc.wait(timeout=30)
            time.sleep(0.5)  # the log reader drains stderr
            raise AssertionError("the server did not exit on SIGTERM:\n" + "".join(self.log))
