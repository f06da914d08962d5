"""The stream types: a volume to read and the single-use body that
streams it, hashing one chunk ahead off the sending thread.
"""

from __future__ import annotations

import hashlib
import io
import threading
from pathlib import Path

import pytest

from volume_image import errors
from volume_image.pipeline import stream as _stream

DATA = bytes(range(256)) * 4096  # 1 MiB


def test_body_is_single_use() -> None:
    body = _stream.MeteredBody(
        io.BytesIO(b"abc"), 3, chunk_size=2, hash_algo="sha512"
    )
    assert b"".join(body) == b"abc" and len(body) == 3
    with pytest.raises(RuntimeError):
        list(body)
    assert "abc" not in repr(body)


def test_body_reads_and_hashes_off_the_sending_thread() -> None:
    data = DATA * 3
    readers: set[int] = set()

    class Traced(io.BytesIO):
        def readinto(self, buf: object) -> int:  # type: ignore[override]
            readers.add(threading.get_ident())
            return super().readinto(buf)  # type: ignore[arg-type]

    body = _stream.MeteredBody(
        Traced(data), len(data), chunk_size=64 * 1024, hash_algo="sha512"
    )
    # the consumer keeps no chunk: the body reuses two buffers
    sent = b"".join(bytes(chunk) for chunk in body)
    assert sent == data
    assert body.hash.hexdigest() == hashlib.sha512(data).hexdigest()
    assert readers and threading.get_ident() not in readers


def test_body_with_read_only_file_object() -> None:
    class ReadOnly(io.RawIOBase):
        def __init__(self) -> None:
            self.buf = io.BytesIO(DATA)

        def readable(self) -> bool:
            return True

        def read(self, n: int = -1) -> bytes:
            return self.buf.read(min(n, 1000))  # short reads, too

    body = _stream.MeteredBody(
        ReadOnly(), len(DATA), chunk_size=64 * 1024, hash_algo="sha256"
    )
    assert b"".join(bytes(c) for c in body) == DATA
    assert body.hash.hexdigest() == hashlib.sha256(DATA).hexdigest()


def test_a_source_opens_at_byte_zero_each_time(tmp_path: Path) -> None:
    path = tmp_path / "v"
    path.write_bytes(DATA)
    src = _stream.Source(path)
    assert src.size == len(DATA) and src.retriable
    for _ in range(2):
        with src.open() as f:
            assert f.read(4) == DATA[:4]


def test_a_file_object_that_cannot_seek_is_sent_once() -> None:
    class Pipe(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def readinto(self, b):  # type: ignore[no-untyped-def]
            return 0

    src = _stream.Source(fileobj=Pipe(), size=0)  # type: ignore[arg-type]
    assert not src.retriable
    with src.open() as f:
        assert f.readinto(bytearray(4)) == 0
    with pytest.raises(errors.SourceError, match="cannot be sent again"):
        with src.open():
            pass


def test_digest_of_reads_the_whole_source_again(tmp_path: Path) -> None:
    path = tmp_path / "v"
    path.write_bytes(DATA)
    src = _stream.Source(path)
    assert _stream.digest_of(src, "sha256", 4096) == (
        hashlib.sha256(DATA).hexdigest()
    )
    assert _stream.digest_of(src, "md5", 65536) == (
        hashlib.md5(DATA, usedforsecurity=False).hexdigest()
    )


def test_a_short_source_is_a_source_error() -> None:
    body = _stream.MeteredBody(
        io.BytesIO(DATA[:100]),
        len(DATA),
        chunk_size=4096,
        hash_algo="sha512",
    )
    with pytest.raises(errors.SourceError):
        b"".join(bytes(c) for c in body)
