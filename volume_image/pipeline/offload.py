"""Blocking work in native threads: one mechanism for plain processes and
for eventlet.

cinder-volume runs under eventlet: all its green threads share one OS
thread, so a green thread that reads a volume, hashes or gzips holds every
other one (RPC heartbeats, other volumes' requests) until it is done.  A
plain process (the CLI) gains from the same split: hashing in a native
thread overlaps the socket sends, and hashlib and file reads release the
GIL, so several uploads use several cores.

:func:`run` executes a call in a native thread and waits for it;
:class:`Worker` starts calls one at a time and lets the caller do other
work (send the previous chunk) until it needs the result.  Under eventlet
both go through :mod:`eventlet.tpool`, whose native threads wake the
waiting green thread; otherwise :func:`run` calls directly and a
:class:`Worker` owns one native thread.

The functions given here run outside the event loop: they must not log,
call back into the caller, or touch green locks (a contended green lock in
a native thread has no hub to wait on).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import sys
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

__all__ = ["Pending", "Worker", "green", "run"]

T = TypeVar("T")


def green() -> bool:
    """Whether this process runs under eventlet's monkey patching."""
    patcher = sys.modules.get("eventlet.patcher")
    return bool(patcher is not None and patcher.is_monkey_patched("thread"))


def run(fn: Callable[..., T], *args: Any) -> T:
    """Call ``fn(*args)`` off the event loop and return its result.

    Without eventlet there is no loop to keep free: the call runs here.

    :raises: whatever ``fn`` raises.
    """
    if green():
        from eventlet import tpool

        result: T = tpool.execute(fn, *args)
        return result
    return fn(*args)


class Pending(Protocol[T]):  # type: ignore[misc]
    """A started call; ``result()`` waits for it and returns or raises."""

    def result(self) -> T: ...


class _GreenPending:
    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        import eventlet
        from eventlet import tpool

        self._thread = eventlet.spawn(tpool.execute, fn, *args)

    def result(self) -> Any:
        return self._thread.wait()


class Worker:
    """Runs calls in a native thread, one at a time, while the caller goes
    on; a context manager that joins its thread on exit.

    The caller keeps at most one call in flight and collects it with
    ``result()`` before starting the next, which is what keeps the order
    of reads and hash updates.
    """

    def __init__(self) -> None:
        self._green = green()
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._last: _GreenPending | None = None

    def start(self, fn: Callable[..., T], *args: Any) -> Pending[T]:
        """Begin ``fn(*args)`` in the native thread."""
        if self._green:
            self._last = _GreenPending(fn, args)
            return self._last
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="volume_image"
            )
        return self._pool.submit(fn, *args)

    def close(self) -> None:
        """Wait for a call still running and end the thread: the caller
        may close or rewind the file it reads right after.
        """
        if self._last is not None:
            last, self._last = self._last, None
            with contextlib.suppress(Exception):
                # its outcome was not wanted (the send failed first)
                last.result()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
