"""Safetensors without loading whole files: read tensors (or row ranges) by offset,
write shards whose layout is fixed before the first byte of data.

Reading parses each file's JSON header and then `pread`s only the bytes asked for,
so memory holds one piece of one tensor at a time. Writing knows every output
tensor's name, dtype and shape up front (quantized shapes are exact functions of
the source shapes), so each shard's header is written first and the data is placed
at its final offset as it is produced: nothing is buffered, and a shard is never
rewritten.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ConvertError

# safetensors dtype -> (numpy storage dtype, mlx dtype name, item size)
_DTYPES = {
    "BF16": (np.uint16, "bfloat16", 2),
    "F16": (np.float16, "float16", 2),
    "F32": (np.float32, "float32", 4),
    "U32": (np.uint32, "uint32", 4),
    "U8": (np.uint8, "uint8", 1),
    "I32": (np.int32, "int32", 4),
}
_CODES = {mlx_name: code for code, (_, mlx_name, _) in _DTYPES.items()}


def itemsize(code: str) -> int:
    return _DTYPES[code][2]


def dtype_code(mx_dtype) -> str:
    """The safetensors code of an mlx dtype (mx.bfloat16 -> "BF16")."""
    return _CODES[str(mx_dtype).split(".")[-1]]


@dataclass(frozen=True)
class TensorInfo:
    file: Path
    dtype: str  # safetensors code
    shape: tuple
    offset: int  # absolute byte offset of the data in `file`
    nbytes: int


def read_header(path: Path) -> dict[str, TensorInfo]:
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
    except (OSError, ValueError, struct.error) as e:
        raise ConvertError(f"{path.name}: not a readable safetensors file ({e})") from None
    out = {}
    for name, v in header.items():
        if name == "__metadata__":
            continue
        if v["dtype"] not in _DTYPES:
            raise ConvertError(f"{path.name}: tensor {name} has unsupported dtype {v['dtype']}")
        begin, end = v["data_offsets"]
        out[name] = TensorInfo(path, v["dtype"], tuple(v["shape"]), 8 + n + begin, end - begin)
    return out


def _pread_all(fd: int, n: int, offset: int) -> bytes:
    chunks, got = [], 0
    while got < n:
        b = os.pread(fd, n - got, offset + got)
        if not b:
            raise ConvertError(f"unexpected end of file reading {n} bytes at {offset}")
        chunks.append(b)
        got += len(b)
    return b"".join(chunks) if len(chunks) > 1 else chunks[0]


class SourceReader:
    """Every tensor of a directory of safetensors files, read on demand."""

    def __init__(self, files: list[Path]):
        self.tensors: dict[str, TensorInfo] = {}
        for f in files:
            for name, info in read_header(f).items():
                if name in self.tensors:
                    raise ConvertError(f"{f}: tensor {name} also appears in "
                                       f"{self.tensors[name].file.name}")
                self.tensors[name] = info
        self._fds: dict[Path, int] = {}

    def _fd(self, path: Path) -> int:
        fd = self._fds.get(path)
        if fd is None:
            fd = self._fds[path] = os.open(path, os.O_RDONLY)
        return fd

    def _span(self, info: TensorInfo, lo, hi) -> tuple[int, int]:
        """(byte offset, byte count) of rows lo:hi (all rows if lo is None)."""
        rows = info.shape[0] if info.shape else 1
        lo, hi = (0, rows) if lo is None else (lo, hi)
        row_bytes = info.nbytes // max(rows, 1)
        return info.offset + lo * row_bytes, (hi - lo) * row_bytes

    def prefetch(self, name: str, lo: int | None = None, hi: int | None = None):
        """Ask the kernel to start reading these rows now (reads overlap compute)."""
        if hasattr(os, "posix_fadvise"):
            info = self.tensors[name]
            offset, n = self._span(info, lo, hi)
            os.posix_fadvise(self._fd(info.file), offset, n, os.POSIX_FADV_WILLNEED)

    def read(self, name: str, lo: int | None = None, hi: int | None = None):
        """Tensor `name` (rows lo:hi of its first dimension) as an mlx array."""
        import mlx.core as mx

        info = self.tensors[name]
        offset, n = self._span(info, lo, hi)
        buf = _pread_all(self._fd(info.file), n, offset)
        np_dtype, mx_name, _ = _DTYPES[info.dtype]
        shape = (n // (info.nbytes // info.shape[0]),) + info.shape[1:] if info.shape else ()
        arr = mx.array(np.frombuffer(buf, dtype=np_dtype).reshape(shape))
        return arr.view(mx.bfloat16) if mx_name == "bfloat16" else arr

    def close(self):
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


@dataclass(frozen=True)
class Entry:
    """One output array: its name, safetensors dtype code, shape and file prefix."""

    name: str
    dtype: str
    shape: tuple
    prefix: str = "model"

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * itemsize(self.dtype)


def _as_bytes(a) -> np.ndarray:
    import mlx.core as mx

    if a.dtype == mx.bfloat16:
        a = a.view(mx.uint16)
    return np.ascontiguousarray(np.asarray(a))


class ShardWriter:
    """Shards planned from `entries` (in write order), split at `shard_bytes` and
    by prefix; `write` puts rows of an entry at their final place."""

    def __init__(self, directory: Path, entries: list[Entry], shard_bytes: int):
        self.dir = Path(directory)
        self.entries = {e.name: e for e in entries}
        groups: dict[str, list[list[Entry]]] = {}
        for e in entries:
            shards = groups.setdefault(e.prefix, [[]])
            if shards[-1] and sum(x.nbytes for x in shards[-1]) + e.nbytes > shard_bytes:
                shards.append([])
            shards[-1].append(e)
        self.place: dict[str, tuple[str, int]] = {}  # name -> (file, data offset)
        self._headers: dict[str, bytes] = {}
        for prefix, shards in groups.items():
            for i, shard in enumerate(shards):
                fname = f"{prefix}-{i + 1:05d}-of-{len(shards):05d}.safetensors"
                self._plan_file(fname, shard)
        self._fds: dict[str, int] = {}
        self._written = {name: 0 for name in self.entries}

    def _plan_file(self, fname: str, shard: list[Entry]):
        header, pos = {"__metadata__": {"format": "mlx"}}, 0
        for e in shard:
            header[e.name] = {"dtype": e.dtype, "shape": list(e.shape), "data_offsets": [pos, pos + e.nbytes]}
            pos += e.nbytes
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        self._headers[fname] = struct.pack("<Q", len(raw)) + raw
        base = len(self._headers[fname])
        for e in shard:
            self.place[e.name] = (fname, base + header[e.name]["data_offsets"][0])

    @property
    def weight_map(self) -> dict[str, str]:
        return {name: self.place[name][0] for name in sorted(self.place)}

    @property
    def total_bytes(self) -> int:
        return sum(e.nbytes for e in self.entries.values())

    def write(self, name: str, array, row: int = 0):
        e = self.entries[name]
        data = _as_bytes(array)
        if data.nbytes and tuple(array.shape[1:]) != tuple(e.shape[1:]):
            raise RuntimeError(f"{name}: produced {array.shape}, planned {e.shape}")
        fname, base = self.place[name]
        fd = self._fd(fname)
        row_bytes = e.nbytes // e.shape[0] if e.shape else e.nbytes
        mv, off = memoryview(data).cast("B"), base + row * row_bytes
        while mv.nbytes:
            n = os.pwrite(fd, mv, off)
            mv, off = mv[n:], off + n
        self._written[name] += data.nbytes

    def _fd(self, fname: str) -> int:
        fd = self._fds.get(fname)
        if fd is None:
            fd = os.open(self.dir / fname, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            self._fds[fname] = fd
            os.pwrite(fd, self._headers[fname], 0)
        return fd

    def abort(self):
        """Close the files without checking them (the caller removes them)."""
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def close(self):
        """Flush everything to disk; raise if any planned byte was not written."""
        missing = [n for n, e in self.entries.items() if self._written[n] != e.nbytes]
        for fd in self._fds.values():
            os.fsync(fd)
            os.close(fd)
        self._fds.clear()
        if missing:
            raise RuntimeError(f"{len(missing)} tensor(s) incompletely written, e.g. {missing[0]}")
