"""A small fake Hugging Face Hub on 127.0.0.1, enough for `snapshot_download`.

It answers what huggingface_hub 1.x/2.x asks of a Hub (point HF_ENDPOINT at `url`):
- GET  /api/models/{repo}/revision/{rev}   -> {"id", "sha", "siblings"}
- GET  /api/models/{repo}/tree/{sha}[/...] -> the file list (LFS entries for weights)
- HEAD /{repo}/resolve/{rev}/{file}        -> X-Repo-Commit, ETag / X-Linked-Etag,
                                              X-Linked-Size, Content-Length
- GET  /{repo}/resolve/{rev}/{file}        -> the bytes (Range honoured)
Unknown repos answer 404 with X-Error-Code: RepoNotFound, as the Hub does.

`gets` counts full or partial GETs per (repo, file). `break_file` makes the GETs
of that file send `break_after` bytes and then drop the connection (a download
interrupted mid-way); resumed (Range) requests of it then fail with HTTP 500, so
the client gives up instead of resuming.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

SHA = "0123456789abcdef0123456789abcdef01234567"
LFS_SUFFIXES = (".safetensors", ".bin", ".gguf")


class FakeHub:
    def __init__(self, repos: dict[str, dict[str, bytes]], sha: str = SHA):
        self.repos, self.sha = repos, sha
        self.gets: Counter = Counter()
        self.break_file: str | None = None
        self.break_after = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()

    def tree(self, repo: str) -> list[dict]:
        out = []
        for name, data in sorted(self.repos[repo].items()):
            entry = {"type": "file", "path": name, "size": len(data), "oid": _git_oid(data)}
            if name.endswith(LFS_SUFFIXES):
                entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data),
                                "pointerSize": 134}
            out.append(entry)
        return out


def _git_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def repo_files(path: Path) -> dict[str, bytes]:
    """The files of a checkpoint directory, as a fake repo's contents."""
    return {f.name: f.read_bytes() for f in sorted(Path(path).iterdir()) if f.is_file()}


def _handler(hub: FakeHub):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # keep test output quiet
            pass

        def do_GET(self):
            self._serve(body=True)

        def do_HEAD(self):
            self._serve(body=False)

        def _serve(self, body: bool):
            parts = [unquote(p) for p in urlparse(self.path).path.split("/") if p]
            if parts[:2] == ["api", "models"]:
                return self._api(parts[2:])
            if "resolve" in parts:
                i = parts.index("resolve")
                repo, file = "/".join(parts[:i]), "/".join(parts[i + 2:])
                return self._file(repo, file, body)
            self._reply(404, b"not found")

        def _api(self, rest: list[str]):
            for key in ("revision", "tree"):
                if key in rest:
                    i = rest.index(key)
                    repo = "/".join(rest[:i])
                    if repo not in hub.repos:
                        return self._reply(404, b'{"error":"Repository not found"}',
                                           {"X-Error-Code": "RepoNotFound"})
                    if key == "revision":
                        info = {"id": repo, "sha": hub.sha, "private": False,
                                "siblings": [{"rfilename": f} for f in sorted(hub.repos[repo])]}
                        return self._json(info)
                    return self._json(hub.tree(repo))
            self._reply(404, b"{}")

        def _file(self, repo: str, file: str, body: bool):
            files = hub.repos.get(repo)
            if files is None:
                return self._reply(404, b"", {"X-Error-Code": "RepoNotFound"})
            if file not in files:
                return self._reply(404, b"", {"X-Error-Code": "EntryNotFound",
                                              "X-Repo-Commit": hub.sha})
            data = files[file]
            etag = hashlib.sha256(data).hexdigest() if file.endswith(LFS_SUFFIXES) else _git_oid(data)
            headers = {"X-Repo-Commit": hub.sha, "ETag": f'"{etag}"', "Accept-Ranges": "bytes"}
            if file.endswith(LFS_SUFFIXES):
                headers.update({"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": str(len(data))})
            if not body:
                return self._reply(200, b"", headers, length=len(data))
            hub.gets[(repo, file)] += 1
            start = _range_start(self.headers.get("Range"))
            broken = file == hub.break_file
            if broken and start:
                return self._reply(500, b"server error")
            if start:
                headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            status = 206 if start else 200
            if broken:
                self._reply(status, data[: hub.break_after], headers, length=len(data))
                self.close_connection = True  # the rest never comes
                return
            self._reply(status, data[start:], headers)

        def _json(self, obj):
            self._reply(200, json.dumps(obj).encode(), {"Content-Type": "application/json"})

        def _reply(self, status: int, data: bytes, headers=None, length=None):
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data) if length is None else length))
            self.end_headers()
            if self.command != "HEAD" and data:
                self.wfile.write(data)
                self.wfile.flush()

    return Handler


def _range_start(header: str | None) -> int:
    if not header or not header.startswith("bytes="):
        return 0
    return int(header[len("bytes="):].split("-")[0] or 0)
