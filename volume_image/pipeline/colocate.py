"""Co-location, the shell: ask Glance to copy an image to the stores
that :mod:`volume_image.core.placement` chose, poll the image, and judge
each target from its record.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from volume_image import errors
from volume_image.clients import glance
from volume_image.core import deadline
from volume_image.core.placement import (
    COPIED,
    FAILED,
    NOT_PERMITTED,
    UNFINISHED,
    StoreCopy,
    judge,
    store_list,
)
from volume_image.pipeline import retry

__all__ = ["copy_to_stores"]

LOG = logging.getLogger(__name__)

# what Glance 33 answers when another import of the image holds its lock
_BUSY = ("active task", "still in progress")
_ALREADY = "already present at store"
# requests of one copy (a 400 or 409 is followed by a new request)
_MAX_REQUESTS = 5
_POLL_FIRST = 0.2
_POLL_MAX = 2.0
# waits between reads of the image while Glance is briefly unavailable
_READ_DELAYS = (0.5, 1.0, 2.0, None)
# a hash mismatch leaves the target file behind; a retry says Duplicate
_STALE_HINTS = ("os_hash_value", "duplicate")


def _explain(reason: str, task_message: str, store: str, image_id: str) -> str:
    """A failed store's reason, with the task's message as an explanation
    and the remedy for a stale file, which Glance's API never names.
    """
    text = reason
    if task_message:
        # with all_stores_must_succeed false the task says "Copied N MiB"
        # whatever became of the stores: quoted, never believed
        text += f"; the copy task said {task_message!r}"
    if any(h in task_message.lower() for h in _STALE_HINTS):
        text += ". This is the stale-file trap"
    return text + (
        f". Glance's log for image {image_id} has the cause. If it says "
        "'Duplicate' or 'os_hash_value ... different', a stale file "
        f"blocks the copy: an earlier failed copy left {image_id} in store "
        f"{store}'s directory, or a same-size file staging/{image_id} was "
        "reused without being checked; every retry fails until an "
        "operator deletes both on the Glance host"
    )


def copy_to_stores(
    client: glance.GlanceClient,
    image_id: str,
    targets: Sequence[str],
    *,
    timeout: float,
    cancel: threading.Event | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[list[StoreCopy], dict[str, Any]]:
    """Copy an active image to ``targets`` with Glance's ``copy-image``
    import and wait, at most ``timeout`` seconds, for the outcome.

    A target that already holds the image (400) counts as copied; a copy
    already running (409 "Image has active task") is waited for and the
    targets are judged again, and asked for once more if still missing.

    :param client: the client with the copy credentials.
    :returns: each target's outcome (in ``targets`` order), and the last
        image record read.
    :raises UploadCancelled: ``cancel`` was set while waiting.
    :raises GlanceError: Glance could not be asked.
    """
    until = clock() + timeout
    done: dict[str, StoreCopy] = {}
    remaining = list(targets)
    image: dict[str, Any] = {}

    def settle(status: str, why: str) -> None:
        """Every target still open ends as ``status``."""
        for store in remaining:
            done[store] = StoreCopy(store, status, why)
        remaining.clear()

    for _ in range(_MAX_REQUESTS):
        if not remaining:
            break
        answer = client.request_copy(image_id, remaining)
        LOG.info(
            "image %s: copy-image to %s answered %d %s",
            image_id,
            ",".join(remaining),
            answer.status,
            answer.message,
        )
        if answer.status in (403, 404):
            settle(
                NOT_PERMITTED,
                f"the copy credentials may not copy this image "
                f"({answer.status}: {answer.message})",
            )
            break
        message = answer.message.lower()
        busy = answer.status == 409 and any(b in message for b in _BUSY)
        if (answer.status == 400 and _ALREADY not in message) or (
            answer.status == 409 and not busy
        ):
            settle(FAILED, f"Glance refused: {answer.message}")
            break
        # 202 (ours runs), 409 busy (another runs): wait until no import
        # holds the image; 400 already present: judge at once
        image = _wait(
            client,
            image_id,
            until,
            cancel,
            clock,
            sleep,
            wait=busy or (answer.status == 202),
        )
        verdict = judge(image, remaining)
        if verdict is None:
            held = store_list(image.get("stores"))
            for store in [s for s in remaining if s in held]:
                done[store] = StoreCopy(store, COPIED)
            remaining[:] = [s for s in remaining if s not in held]
            settle(
                UNFINISHED,
                f"still copying after {timeout:g} s ([volume_image] "
                "colocate_timeout); Glance may finish it later",
            )
            break
        copied = [s for s, v in verdict.items() if v.status == COPIED]
        for store in copied:
            done[store] = verdict[store]
        if answer.status == 202:
            task = _task_message(client, image_id)
            for store, v in verdict.items():
                if v.status != COPIED:
                    done[store] = dataclasses.replace(
                        v, reason=_explain(v.reason, task, store, image_id)
                    )
            remaining.clear()
            break
        if answer.status == 400 and not copied:
            # "already present" but not listed: the catalog raced
            settle(FAILED, f"Glance refused: {answer.message}")
            break
        # someone else's copy ended, or some targets were there already:
        # ask again for the rest
        remaining[:] = [s for s in remaining if s not in copied]
    settle(
        FAILED,
        f"Glance kept refusing after {_MAX_REQUESTS} requests "
        "(another import kept the image busy)",
    )
    if not image:
        image = _read(client, image_id, sleep)
    return [done[s] for s in targets], image


def _read(
    client: glance.GlanceClient,
    image_id: str,
    sleep: Callable[[float], None],
) -> dict[str, Any]:
    """GET the image, riding out a brief outage (refused, 5xx): a poll
    that fails once must not end the copies' judgement.
    """
    return retry.ride_out(
        client.get_image, image_id, delays=_READ_DELAYS, sleep=sleep
    )


def _wait(
    client: glance.GlanceClient,
    image_id: str,
    until: float,
    cancel: threading.Event | None,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
    *,
    wait: bool,
) -> dict[str, Any]:
    """Read the image until no import holds it or the deadline passes."""

    def idle(delay: float) -> None:
        # waiting for Glance's copy is bounded by colocate_timeout, not by
        # the budget of the requests (see volume_image.core.deadline)
        with deadline.paused():
            retry.wait(delay, cancel, sleep=sleep)

    return retry.poll(
        lambda: _read(client, image_id, sleep),
        lambda image: not wait or not image.get("os_glance_import_task"),
        until=until,
        every=_POLL_FIRST,
        grow=1.5,
        most=_POLL_MAX,
        idle=idle,
        clock=clock,
    )


def _task_message(client: glance.GlanceClient, image_id: str) -> str:
    """The newest import task's message, or empty: an explanation only."""
    try:
        tasks = client.image_tasks(image_id)
    except errors.GlanceError as exc:
        LOG.debug("image %s: tasks not readable: %s", image_id, exc)
        return ""
    if not tasks:
        return ""
    newest = max(tasks, key=lambda t: str(t.get("created_at") or ""))
    return str(newest.get("message") or "")
