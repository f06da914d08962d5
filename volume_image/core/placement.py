"""Co-location with the base image: the new image goes to every writable
store that holds the image its volume was created from.

Glance 33 ignores Cinder's ``x-openstack-base-image-ref`` header, so
this is done here, in two steps::

    plan (pure): base image's stores + store catalog -> upload store,
                 copy targets, skipped stores and why
    upload into the upload store (pipeline/uploader.py)
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
import re
from collections.abc import Mapping, Sequence
from typing import Any

from volume_image.core import stores

__all__ = [
    "COPIED",
    "FAILED",
    "NOT_PERMITTED",
    "UNFINISHED",
    "Colocation",
    "Plan",
    "StoreCopy",
    "base_image_of",
    "is_image_id",
    "is_image_ref",
    "judge",
    "plan_targets",
    "store_list",
    "unchanged",
]

LOG = logging.getLogger(__name__)

#: what Glance's image schema accepts as an id (a UUID); nothing else may
#: reach a URL path or the x-openstack-base-image-ref header
_IMAGE_ID = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z",
    re.ASCII | re.IGNORECASE,
)


#: what may stand in a URL path segment and a header as it is
_TOKEN = re.compile(r"[A-Za-z0-9._~-]{1,255}\Z", re.ASCII)


def is_image_id(value: object) -> bool:
    """Whether ``value`` is a Glance image id (a UUID, with dashes)."""
    return isinstance(value, str) and _IMAGE_ID.match(value) is not None


def is_image_ref(value: object) -> bool:
    """Whether ``value`` can name an image in a URL path and a header
    unchanged (URL-unreserved characters, not ``.`` or ``..``): the
    library's looser rule, for callers whose ids are not UUIDs (tests,
    other image services).
    """
    return (
        isinstance(value, str)
        and _TOKEN.match(value) is not None
        and value not in (".", "..")
    )


def base_image_of(
    glance_metadata: Mapping[str, Any] | None,
) -> tuple[str | None, str | None]:
    """The base image a volume's glance metadata names.

    The metadata is copied from image properties, which an image's owner
    sets, so it is input like any other.

    :returns: (the image id or None, why a value there was not used).
    """
    value = (glance_metadata or {}).get("image_id")
    if value is None or is_image_id(value):
        return value, None
    return None, (
        f"its glance metadata names base image {ascii(value)[:80]}, which "
        "is not an image id"
    )


#: the store holds the image (copied, or held it already)
COPIED = "copied"
#: Glance tried and failed, or answered that it cannot
FAILED = "failed"
#: the copy credentials may not copy (403), or cannot see the image (404)
NOT_PERMITTED = "not_permitted"
#: still being copied when the wait ended; Glance may finish later
UNFINISHED = "unfinished"


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
