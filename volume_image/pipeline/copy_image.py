"""Glance's ``copy-image`` import, the shell of
:mod:`volume_image.core.placement`: ask Glance to copy an image to some
stores, poll the image until no import holds it, and judge each target
from its record (:func:`copy_to_stores`).
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
# waits between reads of the image while Glance is briefly unavailable: a
# poll that fails once must not end the copies' judgement
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


class _Outcomes:
    """Each target's outcome so far, and the targets still open."""

    def __init__(self, targets: Sequence[str]) -> None:
        self.targets = list(targets)
        self.done: dict[str, StoreCopy] = {}
        self.remaining = list(targets)

    def settle(self, status: str, why: str) -> None:
        """Every target still open ends as ``status``."""
        for store in self.remaining:
            self.done[store] = StoreCopy(store, status, why)
        self.remaining.clear()

    def close(self, stores: Sequence[StoreCopy]) -> None:
        """These targets are decided."""
        for copy in stores:
            self.done[copy.store] = copy
        decided = {c.store for c in stores}
        self.remaining[:] = [s for s in self.remaining if s not in decided]

    def in_order(self) -> list[StoreCopy]:
        return [self.done[s] for s in self.targets]


def _refusal(answer: glance.CopyAnswer) -> tuple[str, str] | None:
    """How every open target ends when Glance refused the copy request,
    or None when it runs, another import runs, or a target holds it.
    """
    if answer.status in (403, 404):
        return (
            NOT_PERMITTED,
            f"the copy credentials may not copy this image "
            f"({answer.status}: {answer.message})",
        )
    message = answer.message.lower()
    if (answer.status == 400 and _ALREADY not in message) or (
        answer.status == 409 and not _busy(answer)
    ):
        return FAILED, f"Glance refused: {answer.message}"
    return None


def _busy(answer: glance.CopyAnswer) -> bool:
    """Whether another import of the image holds its lock."""
    message = answer.message.lower()
    return answer.status == 409 and any(b in message for b in _BUSY)


def _import_over(image: dict[str, Any]) -> bool:
    """Whether no import holds the image."""
    return not image.get("os_glance_import_task")


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
    outcomes = _Outcomes(targets)
    image: dict[str, Any] = {}

    def idle(delay: float) -> None:
        # waiting for Glance's copy is bounded by colocate_timeout, not by
        # the budget of the requests (see volume_image.core.deadline)
        with deadline.paused():
            retry.wait(delay, cancel, sleep=sleep)

    def read() -> dict[str, Any]:
        return retry.ride_out(
            client.get_image, image_id, delays=_READ_DELAYS, sleep=sleep
        )

    for _ in range(_MAX_REQUESTS):
        answer = _ask(client, image_id, outcomes)
        if answer is None:
            break
        image = _image_after(answer, read, idle, until, clock)
        if _judged(client, image_id, image, answer, outcomes, timeout):
            break
    outcomes.settle(
        FAILED,
        f"Glance kept refusing after {_MAX_REQUESTS} requests "
        "(another import kept the image busy)",
    )
    if not image:
        image = read()
    return outcomes.in_order(), image


def _image_after(
    answer: glance.CopyAnswer,
    read: Callable[[], dict[str, Any]],
    idle: Callable[[float], None],
    until: float,
    clock: Callable[[], float],
) -> dict[str, Any]:
    """The image once no import holds it after a 202 (ours runs) or a
    409 busy (another runs), or by ``until``; at once after a 400
    already present.
    """
    if not (_busy(answer) or answer.status == 202):
        return read()
    return retry.poll(
        read,
        _import_over,
        until=until,
        every=_POLL_FIRST,
        grow=1.5,
        most=_POLL_MAX,
        idle=idle,
        clock=clock,
    )


def _ask(
    client: glance.GlanceClient, image_id: str, outcomes: _Outcomes
) -> glance.CopyAnswer | None:
    """Ask Glance to copy the image to the open targets: its answer, or
    None when no target is open or Glance refused (they are settled).
    """
    if not outcomes.remaining:
        return None
    answer = client.request_copy(image_id, outcomes.remaining)
    LOG.info(
        "image %s: copy-image to %s answered %d %s",
        image_id,
        ",".join(outcomes.remaining),
        answer.status,
        answer.message,
    )
    refused = _refusal(answer)
    if refused is None:
        return answer
    outcomes.settle(*refused)
    return None


def _judged(
    client: glance.GlanceClient,
    image_id: str,
    image: dict[str, Any],
    answer: glance.CopyAnswer,
    outcomes: _Outcomes,
    timeout: float,
) -> bool:
    """Judge the open targets from the image once its import is over;
    whether the copies are over (else the rest is asked for again).
    """
    verdict = judge(image, outcomes.remaining)
    if verdict is None:
        held = store_list(image.get("stores"))
        outcomes.close(
            [StoreCopy(s, COPIED) for s in outcomes.remaining if s in held]
        )
        outcomes.settle(
            UNFINISHED,
            f"still copying after {timeout:g} s ([volume_image] "
            "colocate_timeout); Glance may finish it later",
        )
        return True
    copied = [v for v in verdict.values() if v.status == COPIED]
    outcomes.close(copied)
    if answer.status == 202:
        task = _task_message(client, image_id)
        outcomes.close(
            [
                dataclasses.replace(
                    v, reason=_explain(v.reason, task, v.store, image_id)
                )
                for v in verdict.values()
                if v.status != COPIED
            ]
        )
        return True
    if answer.status == 400 and not copied:
        # "already present" but not listed: the catalog raced
        outcomes.settle(FAILED, f"Glance refused: {answer.message}")
        return True
    # someone else's copy ended, or some targets were there already: ask
    # again for the rest
    return False


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
