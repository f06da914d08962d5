"""One deadline per operation, however many requests it makes.

A timeout bounds one socket operation; retries, backoff waits and a
server that answers slowly multiply it.  An operation (``validate``, an
API write's check, the Glance side of an upload) therefore runs
``within`` a budget of seconds, and every request it makes to Glance is
cut to what is left of it (:func:`remaining`).  Time spent moving the
volume's own bytes, or converting them, is not waiting on Glance: it runs
``paused`` and does not count.

The current budget lives in a :class:`contextvars.ContextVar`, so it is
per thread and, under eventlet, per green thread: concurrent uploads in
one cinder-volume never share a clock.  No I/O here.
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Callable, Iterator

__all__ = ["Budget", "paused", "remaining", "within"]


class Budget:
    """Seconds an operation may spend, minus the time spent paused.

    :param seconds: the budget.
    :param clock: a monotonic clock (tests pass their own).
    """

    def __init__(
        self, seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.seconds = seconds
        self._clock = clock
        self._start = clock()
        self._paused_for = 0.0
        self._paused_at: float | None = None

    def remaining(self) -> float:
        """Seconds left; negative once the budget is spent."""
        now = self._clock() if self._paused_at is None else self._paused_at
        return self.seconds - (now - self._start - self._paused_for)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Stop the clock for the body (nested pauses count once)."""
        if self._paused_at is not None:
            yield
            return
        self._paused_at = self._clock()
        try:
            yield
        finally:
            self._paused_for += self._clock() - self._paused_at
            self._paused_at = None


_CURRENT: contextvars.ContextVar[tuple[Budget, ...]] = contextvars.ContextVar(
    "volume_image_deadline", default=()
)


@contextlib.contextmanager
def within(seconds: float, *, fresh: bool = False) -> Iterator[Budget]:
    """Run the body within ``seconds``.

    Nested budgets only tighten: the outer one keeps counting.  With
    ``fresh``, the body gets its own budget alone (cleanup after the
    operation's budget ran out must still be able to ask Glance once).
    """
    budget = Budget(seconds)
    outer = _CURRENT.get()
    token = _CURRENT.set((budget,) if fresh else (*outer, budget))
    try:
        yield budget
    finally:
        _CURRENT.reset(token)


def remaining() -> float | None:
    """Seconds left of the tightest current budget; None outside any."""
    budgets = _CURRENT.get()
    if not budgets:
        return None
    return min(b.remaining() for b in budgets)


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """Stop every current budget's clock for the body."""
    with contextlib.ExitStack() as stack:
        for budget in _CURRENT.get():
            stack.enter_context(budget.paused())
        yield
