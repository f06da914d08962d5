"""A bare TCP server on 127.0.0.1 for tests of hostile peers: one that
never answers, cuts the connection, or stalls mid-answer.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def raw_server(
    handle: Callable[[socket.socket], None] = lambda conn: None,
) -> Iterator[tuple[int, list[socket.socket]]]:
    """Accept connections in a thread and hand each to ``handle`` (by
    default: hold it, never answer).

    :returns: the port, and every connection accepted so far (its length
        is how often a client connected); all are closed on exit.
    """
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            accepted.append(conn)
            handle(conn)

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield listener.getsockname()[1], accepted
    finally:
        listener.close()
        for conn in accepted:
            conn.close()
