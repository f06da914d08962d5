"""Waiting and trying again, in one place: riding out a brief Glance
outage (:func:`ride_out`), polling an image until Glance is done with it
(:func:`poll`), the backoff between attempts of an upload
(:func:`backoff`) and the one way to sleep (:func:`wait`, :func:`pause`).

What is tried again is decided by the caller; this module decides how
long to wait, and never waits past what the caller allows:

* a 503's ``Retry-After`` stretches a wait, at most :data:`DELAY_CAP`;
* a wait that would pass the operation's deadline
  (:mod:`volume_image.core.deadline`) is not begun;
* a cancelled upload wakes up at once;
* a timeout is never ridden out: a Glance that hangs would cost the
  whole timeout once more each time.

Why not tenacity: it is not a dependency of the wheel (the host CLI runs
outside Cinder's virtualenv), and each rule above would be a callback of
its own there (a wait that reads ``Retry-After`` off the exception, a
stop that reads :func:`deadline.remaining` before the sleep, a sleep that
is a :class:`threading.Event` wait, a result predicate for the polls),
plus the upload's own loop, which re-authenticates and replaces a stuck
image between attempts and so fits no decorator.  The rules take fewer
lines written out than configured, and tests can replace one function.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from volume_image import errors
from volume_image.core import deadline

__all__ = [
    "DELAY_CAP",
    "backoff",
    "past",
    "pause",
    "poll",
    "ride_out",
    "wait",
]

LOG = logging.getLogger(__name__)
T = TypeVar("T")

#: the longest single wait, whatever Glance's Retry-After asks
DELAY_CAP = 30.0
# waits between tries of an idempotent call (GET or DELETE of the image)
# while Glance cannot be reached or answers 5xx; None: give up.  About 8 s
# in all: a Glance node restarting, or a worker's "database is locked"
_IDEMPOTENT_DELAYS = (0.2, 0.5, 1.0, 2.0, 4.0, None)


def _stretched(delay: float, exc: errors.VolumeImageError) -> float:
    """``delay``, or longer when Glance's 503 asked for it (Retry-After),
    at most :data:`DELAY_CAP`.
    """
    if not isinstance(exc, errors.GlanceUnavailable):
        return delay
    if exc.retry_after is None:
        return delay
    return min(max(delay, exc.retry_after), DELAY_CAP)


def backoff(first: float, retries: int, exc: errors.VolumeImageError) -> float:
    """The wait before retry number ``retries + 1``: ``first`` doubled
    each time, at most :data:`DELAY_CAP`, or what Glance asked for.
    """
    return _stretched(min(first * 2**retries, DELAY_CAP), exc)


def past(delay: float) -> bool:
    """Whether waiting ``delay`` seconds would pass the deadline."""
    left = deadline.remaining()
    return left is not None and left < delay


def wait(
    seconds: float,
    cancel: threading.Event | None,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Sleep, but wake up and raise when the upload is cancelled.

    :raises UploadCancelled: ``cancel`` was set.
    """
    if cancel is None:
        sleep(seconds)
    elif cancel.wait(seconds):
        raise errors.UploadCancelled("upload cancelled")


def pause(seconds: float, cancel: threading.Event | None) -> None:
    """:func:`wait`, raising at once instead when the wait would pass the
    operation's deadline.

    :raises GlanceUnavailable: (timed out) the deadline is too close.
    :raises UploadCancelled: ``cancel`` was set.
    """
    if past(seconds):
        exc = errors.GlanceUnavailable(
            "Glance is unavailable: the upload gave up, as waiting "
            f"{seconds:.1f} s more would pass its deadline ([volume_image] "
            "operation_deadline)"
        )
        exc.timed_out = True
        raise exc
    wait(seconds, cancel)


def ride_out(
    call: Callable[..., T],
    *args: str,
    delays: Sequence[float | None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """``call(*args)`` for a request that repeating changes nothing (GET,
    DELETE), tried again after each of ``delays`` while Glance refuses
    connections or answers 5xx, then the last error.

    :param delays: the waits, ending in None (give up); default about
        8 s in all.
    :raises GlanceError: what ``call`` raised last, or at once when it
        timed out, or when the next wait would pass the deadline.
    """
    for delay in _IDEMPOTENT_DELAYS if delays is None else delays:
        try:
            return call(*args)
        except errors.GlanceUnavailable as exc:
            if delay is None or exc.timed_out:
                raise
            delay = _stretched(delay, exc)
            if past(delay):
                raise
            LOG.debug("Glance unavailable (%s); again in %.1fs", exc, delay)
            sleep(delay)
    raise ValueError("delays must end in None")


def poll(
    read: Callable[[], T],
    done: Callable[[T], bool],
    *,
    until: float,
    every: float,
    idle: Callable[[float], None],
    grow: float = 1.0,
    most: float = math.inf,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """``read()`` until ``done`` says so of its value, or until the next
    wait would end after ``until`` (a ``clock`` time).

    :param every: the first wait; each next one is ``grow`` times longer,
        at most ``most``.
    :param idle: sleeps between reads (:func:`wait` or :func:`pause`,
        with the caller's cancel event).
    :returns: the last value read, done or not: the caller judges it.
    """
    delay = every
    while True:
        value = read()
        if done(value) or clock() + delay > until:
            return value
        idle(delay)
        delay = min(delay * grow, most)
