"""Test helpers that act on real connections and real files."""

from __future__ import annotations

import io
import socket
import threading
import time
from typing import Any


class CuttingProxy:
    """A loopback TCP proxy that cuts the first ``cuts`` connections whose
    client has sent more than ``cut_after`` bytes: a stream cut mid-upload.
    """

    def __init__(
        self, upstream_port: int, cut_after: int, cuts: int = 1
    ) -> None:
        self.upstream_port = upstream_port
        self.cut_after = cut_after
        self.cuts_left = cuts
        self.cuts_done = 0
        self._lock = threading.Lock()
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self.port = self._sock.getsockname()[1]
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._stop = True
        self._sock.close()

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(
                ("127.0.0.1", self.upstream_port)
            )
            threading.Thread(
                target=self._pump, args=(client, upstream, True), daemon=True
            ).start()
            threading.Thread(
                target=self._pump, args=(upstream, client, False), daemon=True
            ).start()

    def _pump(
        self, src: socket.socket, dst: socket.socket, upload: bool
    ) -> None:
        sent = 0
        try:
            while data := src.recv(65536):
                sent += len(data)
                if upload and sent > self.cut_after:
                    with self._lock:
                        cut = self.cuts_left > 0
                        if cut:
                            self.cuts_left -= 1
                            self.cuts_done += 1
                    if cut:
                        break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


class ThrottledFile(io.RawIOBase):
    """A seekable in-memory volume that reads at about ``rate`` bytes/s."""

    def __init__(self, data: bytes, rate: float) -> None:
        self._buf = io.BytesIO(data)
        self._rate = rate
        self.read_bytes = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, pos: int, whence: int = 0) -> int:
        return self._buf.seek(pos, whence)

    def read(self, n: int = -1) -> Any:
        chunk = self._buf.read(min(n, 256 * 1024) if n > 0 else 256 * 1024)
        time.sleep(len(chunk) / self._rate)
        self.read_bytes += len(chunk)
        return chunk
