"""Co-location with the base image: the new image goes to every writable
store that holds the image its volume was created from.

Glance 33 ignores Cinder's ``x-openstack-base-image-ref`` header, so
this is done here, in two steps::

    plan (pure): base image's stores + store catalog -> upload store,
                 copy targets, skipped stores and why
    upload into the upload store (upload.py)
    copy (shell): POST /v2/images/{id}/import copy-image -> poll the image
                  -> judge (pure) each target from the image record

The outcome of a copy is judged only from the image record: its
``stores`` (copied) and ``os_glance_failed_import`` (failed), once the
copy is over (no ``os_glance_import_task`` lock).  The task's status is
never trusted: it says ``success`` when every target failed.  Its message
is read as an explanation only.

Everything above :func:`copy_to_stores` is pure and tested by tables.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from volume_image import deadline, errors, glance, stores

__all__ = [
    "COPIED",
    "FAILED",
    "NOT_PERMITTED",
    "UNFINISHED",
    "Colocation",
    "Plan",
    "StoreCopy",
    "copy_to_stores",
    "judge",
    "plan_targets",
    "store_list",
    "unchanged",
]

LOG = logging.getLogger(__name__)

#: the store holds the image (copied, or held it already)
COPIED = "copied"
#: Glance tried and failed, or answered that it cannot
FAILED = "failed"
#: the copy credentials may not copy (403), or cannot see the image (404)
NOT_PERMITTED = "not_permitted"
#: still being copied when the wait ended; Glance may finish later
UNFINISHED = "unfinished"

# what Glance 33 answers when another import of the image holds its lock
_BUSY = ("active task", "still in progress")
_ALREADY = "already present at store"
# requests of one copy (a 400 or 409 is followed by a new request)
_MAX_REQUESTS = 5
_POLL_FIRST = 0.2
_POLL_MAX = 2.0
# a hash mismatch leaves the target file behind; a retry says Duplicate
_STALE_HINTS = ("os_hash_value", "duplicate")


@dataclasses.dataclass(frozen=True)
class StoreCopy:
    """What became of one target store."""

    store: str
    status: str
    #: why, in words (Glance's message or ours); empty when copied
    reason: str = ""
    #: for a copied store: Glance reports it in ``stores`` with the
    #: checksum and ``os_hash_value`` the upload was verified against
    verified: bool = False

    def as_dict(self) -> dict[str, Any]:
        """The outcome as a JSON-ready dict."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Plan:
    """Where an upload goes, and where it is copied afterwards."""

    #: the store named in the upload; None: Glance's default store
    upload_store: str | None
    #: the stores to copy to after the upload, in the base image's order
    copy_to: tuple[str, ...] = ()
    #: stores of the base image that are not targets, with why
    skipped: tuple[tuple[str, str], ...] = ()
    #: why the upload goes where it goes, for the report
    reason: str = ""


@dataclasses.dataclass(frozen=True)
class Colocation:
    """The co-location part of an upload's result."""

    base_image: str
    uploaded_to: str | None
    reason: str
    copies: tuple[StoreCopy, ...] = ()
    skipped: tuple[tuple[str, str], ...] = ()
    seconds: float = 0.0

    @property
    def complete(self) -> bool:
        """Whether every target store holds the image."""
        return all(c.status == COPIED for c in self.copies)

    def summary(self) -> str:
        """One line: ``uploaded to X; copied to Y; not copied to Z: why``."""
        parts = [f"uploaded to {self.uploaded_to or '(default)'}"]
        done = [c.store for c in self.copies if c.status == COPIED]
        if done:
            parts.append(f"copied to {', '.join(done)}")
        for c in self.copies:
            if c.status == NOT_PERMITTED:
                parts.append(f"not copied to {c.store}: not permitted")
            elif c.status != COPIED:
                parts.append(f"not copied to {c.store}: {c.status}")
        return "; ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        """The report as a JSON-ready dict."""
        return {
            "base_image": self.base_image,
            "uploaded_to": self.uploaded_to,
            "reason": self.reason,
            "copies": [c.as_dict() for c in self.copies],
            "skipped": [
                {"store": s, "reason": why} for s, why in self.skipped
            ],
            "seconds": self.seconds,
            "complete": self.complete,
        }


def store_list(value: object) -> list[str]:
    """A comma-separated store property of an image, as a list."""
    if not isinstance(value, str):
        return []
    return [s.strip() for s in value.split(",") if s.strip()]


def plan_targets(
    base_ref: str,
    base_image: Mapping[str, Any] | None,
    catalog: stores.StoreCatalog,
    *,
    explicit_store: str | None = None,
    unknown_reason: str = "",
) -> Plan:
    """Decide where an upload co-located with ``base_ref`` goes.

    :param base_ref: the base image's id.
    :param base_image: its record (``GET /v2/images/{id}``), or None when
        it cannot be seen (``unknown_reason`` says why).
    :param catalog: the stores Glance offers.
    :param explicit_store: a store named by the volume type or the caller;
        it wins and nothing is copied.
    :returns: the plan; the upload store is Glance's default store when
        it holds the base image, else the first target in the base
        image's ``stores`` order (the order of its copies).
    """
    if explicit_store is not None:
        return Plan(
            explicit_store,
            reason=f"store {explicit_store} named explicitly; no co-location",
        )
    if not catalog.multistore:
        return Plan(None, reason="Glance has no multi-store")
    default = catalog.default
    default_id = default.id if default else None
    if base_image is None:
        return Plan(
            default_id,
            reason=f"base image {base_ref} {unknown_reason or 'unknown'}; "
            "uploaded to the default store",
        )
    targets: list[str] = []
    skipped: list[tuple[str, str]] = []
    for store_id in store_list(base_image.get("stores")):
        info = catalog.get(store_id)
        if store_id.lower().startswith(stores.RESERVED_PREFIX):
            skipped.append((store_id, "reserved for Glance's own use"))
        elif info is None:
            skipped.append((store_id, "not in Glance's store list"))
        elif info.read_only:
            skipped.append((store_id, "read-only"))
        elif store_id not in targets:
            targets.append(store_id)
    if not targets:
        return Plan(
            default_id,
            skipped=tuple(skipped),
            reason=f"base image {base_ref} is in no writable store; "
            "uploaded to the default store",
        )
    first = default_id if default_id in targets else targets[0]
    why = (
        "the default store"
        if first == default_id
        else "the first of the base image's writable stores"
    )
    return Plan(
        first,
        copy_to=tuple(t for t in targets if t != first),
        skipped=tuple(skipped),
        reason=f"base image {base_ref} is in {', '.join(targets)}; "
        f"uploaded to {first} ({why})",
    )


def judge(
    image: Mapping[str, Any], targets: Sequence[str]
) -> dict[str, StoreCopy] | None:
    """Judge a copy from the image record alone.

    :returns: None while the copy runs (``os_glance_import_task`` set);
        else each target's outcome: copied when ``stores`` lists it,
        failed otherwise (with where Glance left it).
    """
    if image.get("os_glance_import_task"):
        return None
    held = set(store_list(image.get("stores")))
    failed = set(store_list(image.get("os_glance_failed_import")))
    importing = set(store_list(image.get("os_glance_importing_to_stores")))
    out = {}
    for store in targets:
        if store in held:
            out[store] = StoreCopy(store, COPIED)
        elif store in failed:
            out[store] = StoreCopy(
                store, FAILED, "Glance lists it in os_glance_failed_import"
            )
        elif store in importing:
            # Glance 33 leaves stores there when an earlier one failed
            # with all_stores_must_succeed; the lock is gone, so no task
            # is copying them
            out[store] = StoreCopy(
                store,
                FAILED,
                "the copy task ended with it still in "
                "os_glance_importing_to_stores",
            )
        else:
            out[store] = StoreCopy(
                store, FAILED, "the copy task ended without it in stores"
            )
    return out


def unchanged(
    before: Mapping[str, Any], after: Mapping[str, Any]
) -> list[str]:
    """What changed in the image's identity (size, checksum,
    ``os_hash_algo``, ``os_hash_value``) between two records; empty when
    nothing did.
    """

    def value(record: Mapping[str, Any], field: str) -> Any:
        # an empty string and a null say the same: no such digest
        return record.get(field) or None

    return [
        f"{field} was {before.get(field)!r}, now {after.get(field)!r}"
        for field in ("size", "checksum", "os_hash_algo", "os_hash_value")
        if value(before, field) != value(after, field)
    ]


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
    for delay in (0.5, 1.0, 2.0, None):
        try:
            return client.get_image(image_id)
        except errors.GlanceUnavailable as exc:
            if delay is None or exc.timed_out:
                raise
            sleep(delay)
    raise AssertionError("unreachable")


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
    delay = _POLL_FIRST
    while True:
        image = _read(client, image_id, sleep)
        if not wait or not image.get("os_glance_import_task"):
            return image
        if clock() + delay > until:
            return image
        # waiting for Glance's copy is bounded by colocate_timeout, not by
        # the budget of the requests (see volume_image.deadline)
        with deadline.paused():
            if cancel is not None and cancel.wait(delay):
                raise errors.UploadCancelled("upload cancelled")
            if cancel is None:
                sleep(delay)
        delay = min(delay * 1.5, _POLL_MAX)


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
