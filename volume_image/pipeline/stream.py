"""The bytes of an upload: a volume to read (:class:`Source`) and the
single-use body that streams it (:class:`MeteredBody`), reading and
hashing one chunk ahead in a native thread.  No HTTP here.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from volume_image import errors
from volume_image.pipeline import offload

__all__ = [
    "MeteredBody",
    "ProgressCallback",
    "Source",
    "digest_of",
    "new_hash",
]

#: ``progress(bytes_done, bytes_total)``, called after every chunk
ProgressCallback = Callable[[int, int], None]


def _path_size(path: Path) -> int:
    """The size of a volume file or block device."""
    try:
        st = path.stat()
        if stat.S_ISBLK(st.st_mode):
            # a block device's st_size is 0: ask the device
            with open(path, "rb") as dev:
                return dev.seek(0, os.SEEK_END)
        if not stat.S_ISREG(st.st_mode):
            raise errors.SourceError(
                f"{path} is neither a file nor a block device"
            )
        return st.st_size
    except OSError as exc:
        raise errors.SourceError(
            f"cannot read volume {path}: {exc.strerror}"
        ) from exc


class Source:
    """A volume to read: a path (file or block device), or an open binary
    file with a known size.

    Each :meth:`open` starts at byte 0, which is what makes a retry safe.
    A file object that cannot seek can be sent once, never retried.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        fileobj: IO[bytes] | None = None,
        size: int | None = None,
    ) -> None:
        if (path is None) == (fileobj is None):
            raise ValueError("give exactly one of path and fileobj")
        self.path = None if path is None else Path(path)
        self._fileobj = fileobj
        if fileobj is not None:
            if size is None:
                raise ValueError("a file object needs its size")
            self.size = size
            self._opened = False
        elif path is not None:
            self.size = _path_size(Path(path)) if size is None else size

    @property
    def retriable(self) -> bool:
        """Whether the source can be read again from byte 0."""
        if self._fileobj is None:
            return True
        try:
            return self._fileobj.seekable()
        except (OSError, ValueError):
            return False

    @contextlib.contextmanager
    def open(self) -> Iterator[IO[bytes]]:
        """Yield the source positioned at byte 0."""
        if self._fileobj is not None:
            if self._opened:
                if not self.retriable:
                    raise errors.SourceError(
                        "the source cannot seek, so it cannot be sent again"
                    )
                self._fileobj.seek(0)
            self._opened = True
            yield self._fileobj
            return
        if self.path is None:
            raise ValueError("a Source has a path or a file object")
        try:
            f = open(self.path, "rb")
        except OSError as exc:
            raise errors.SourceError(
                f"cannot open volume {self.path}: {exc.strerror}"
            ) from exc
        with f:
            yield f


class MeteredBody:
    """A single-use upload body: reads the source in chunks, counts and
    hashes every byte, reports progress, honours cancellation, and fails
    if the source ends early.

    ``len()`` is the declared size, so requests sends ``Content-Length``.
    It computes one digest (``hash_algo``), or none.

    Reading and hashing run in a native thread (:mod:`volume_image.offload`)
    one chunk ahead of the send: the next chunk is read and hashed while
    the current one goes out, into two buffers used in turn, so memory
    stays at two chunks and an event loop (cinder-volume's) is never held
    by file reads or hashing.
    """

    def __init__(
        self,
        fileobj: IO[bytes],
        size: int,
        *,
        chunk_size: int,
        hash_algo: str | None,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> None:
        self._f = fileobj
        self.size = size
        self._chunk = chunk_size
        #: the one digest computed while streaming, or None (no hashing)
        self.hash = None if hash_algo is None else new_hash(hash_algo)
        self.sent = 0
        self._progress = progress
        self._cancel = cancel
        self._used = False
        self._readinto = True

    def __len__(self) -> int:
        return self.size

    def __repr__(self) -> str:
        # keystoneauth's debug log prints the body: never the bytes
        return f"<MeteredBody {self.size} bytes>"

    def _fill(self, buf: bytearray, want: int) -> int:
        """Read up to ``want`` bytes into ``buf`` and hash them; runs in
        the worker thread, so it neither logs nor calls back.
        """
        view = memoryview(buf)[:want]
        got = 0
        while got < want:
            n = self._read_into(view[got:])
            if not n:
                break
            got += n
        if self.hash is not None:
            self.hash.update(view[:got])
        return got

    def _read_into(self, view: memoryview) -> int:
        if self._readinto:
            try:
                return self._f.readinto(view)  # type: ignore[attr-defined,no-any-return]
            except (AttributeError, NotImplementedError):
                # a file-like object with read() only
                self._readinto = False
        data = self._f.read(len(view))
        view[: len(data)] = data
        return len(data)

    def _collect(self, pending: offload.Pending[int]) -> int:
        try:
            return pending.result()
        except OSError as exc:
            raise errors.SourceError(
                f"reading the volume failed at byte {self.sent}: {exc}"
            ) from exc

    def __iter__(self) -> Iterator[bytes | memoryview]:
        if self._used:
            raise RuntimeError("an upload body can be sent only once")
        self._used = True
        if self.size == 0:
            return
        bufs = (bytearray(self._chunk), bytearray(self._chunk))
        turn = 0
        with offload.Worker() as worker:
            pending = worker.start(
                self._fill, bufs[turn], min(self._chunk, self.size)
            )
            while True:
                got = self._collect(pending)
                if not got:
                    raise errors.SourceError(
                        f"the volume ended at byte {self.sent} of {self.size}"
                    )
                chunk = memoryview(bufs[turn])[:got]
                self.sent += got
                if self._cancel is not None and self._cancel.is_set():
                    raise errors.UploadCancelled("upload cancelled")
                ahead = min(self._chunk, self.size - self.sent)
                if ahead:
                    # the other buffer was sent before this chunk was asked
                    # for, so it is free to fill
                    turn ^= 1
                    pending = worker.start(self._fill, bufs[turn], ahead)
                if self._progress is not None:
                    self._progress(self.sent, self.size)
                yield chunk
                if not ahead:
                    return


def new_hash(algo: str) -> Any:
    if algo == "md5":
        return hashlib.md5(usedforsecurity=False)
    return hashlib.new(algo)


def digest_of(src: Source, algo: str, chunk_size: int) -> str:
    """Read the whole source again and return its ``algo`` hex digest
    (runs in a native thread: see :func:`offload.run`).
    """
    digest = new_hash(algo)
    with src.open() as f:
        left = src.size
        while left and (data := f.read(min(chunk_size, left))):
            digest.update(data)
            left -= len(data)
    return str(digest.hexdigest())
