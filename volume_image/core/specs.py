"""Volume-type extra specs and the ``image_service:`` namespace. Pure.

``image_service:`` keys tell the upload path where images go; they are not
backend capabilities.  :func:`split_extra_specs` separates them so that
backend-driver validation and the scheduler see only real capabilities.
Keys in the namespace are matched case-insensitively: Cinder's volume
manager reads the exact lower-case key, so ``Image_Service:Store_Id`` would
otherwise be stored and then silently ignored.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from typing import Any

from volume_image import errors
from volume_image.core.text import shown

__all__ = [
    "KNOWN_KEYS",
    "NAMESPACE",
    "STORE_ID_KEY",
    "SplitSpecs",
    "split_extra_specs",
]

NAMESPACE = "image_service:"
STORE_ID_KEY = NAMESPACE + "store_id"
KNOWN_KEYS = frozenset({STORE_ID_KEY})


@dataclasses.dataclass(frozen=True)
class SplitSpecs:
    """Extra specs split at the ``image_service:`` namespace.

    :ivar backend: every other spec, unchanged: what backend drivers and
        the scheduler should see.
    :ivar image_service: the namespace's specs, keyed by the lower-case
        key; ``original_keys`` maps those back to what the caller wrote.
    """

    backend: Mapping[str, Any]
    image_service: Mapping[str, Any]
    original_keys: Mapping[str, str]

    @property
    def store_id(self) -> Any:
        """The ``image_service:store_id`` value as given, or None."""
        return self.image_service.get(STORE_ID_KEY)

    @property
    def has_store_id(self) -> bool:
        """Whether the specs name a store at all."""
        return STORE_ID_KEY in self.image_service


def is_image_service_key(key: str) -> bool:
    """Whether ``key`` is in the ``image_service:`` namespace, any case."""
    return key.lower().startswith(NAMESPACE)


def split_extra_specs(
    specs: Mapping[str, Any], *, strict_case: bool = False
) -> SplitSpecs:
    """Split extra specs at the ``image_service:`` namespace.

    :param specs: the volume type's extra specs.
    :param strict_case: refuse a namespace key that is not lower-case.
        For writes: Cinder would store ``Image_Service:Store_Id`` and then
        ignore it, so the image would land in the default store.
    :returns: the split.
    :raises ConflictingSpecKeys: one key appears twice, in two cases.
    :raises UnknownSpecKey: an ``image_service:`` key we do not know, or,
        with ``strict_case``, one not written in lower case.
    """
    backend: dict[str, Any] = {}
    image_service: dict[str, Any] = {}
    original: dict[str, str] = {}
    for key, value in specs.items():
        if not isinstance(key, str):
            # JSON keys are strings; a caller's mapping may hold anything
            raise errors.UnknownSpecKey(
                f"extra spec key {shown(key)} is not a string",
                key=str(key),
                value=value,
            )
        if not is_image_service_key(key):
            backend[key] = value
            continue
        norm = key.lower()
        if norm in original:
            raise errors.ConflictingSpecKeys(
                f"extra specs {shown(original[norm])} and {shown(key)} are "
                "the same key in two cases; keep only the lower-case "
                f"{shown(norm)}",
                key=key,
                value=value,
            )
        if norm not in KNOWN_KEYS:
            # compare what follows the namespace: the shared prefix alone
            # would make every key look close
            names = {k[len(NAMESPACE) :]: k for k in KNOWN_KEYS}
            close = [
                names[m]
                for m in difflib.get_close_matches(
                    norm[len(NAMESPACE) :], names, n=1, cutoff=0.6
                )
            ]
            hint = f" Did you mean {shown(close[0])}?" if close else ""
            raise errors.UnknownSpecKey(
                f"extra spec {shown(key)} is not a known image_service key "
                f"and would be ignored.{hint} Known keys: "
                f"{', '.join(sorted(KNOWN_KEYS))}.",
                key=key,
                value=value,
                suggestion=close[0] if close else None,
            )
        if strict_case and key != norm:
            raise errors.UnknownSpecKey(
                f"extra spec {shown(key)} would be stored but ignored: Cinder "
                f"reads only the lower-case key. Write it as {shown(norm)}.",
                key=key,
                value=value,
                suggestion=norm,
            )
        original[norm] = key
        image_service[norm] = value
    return SplitSpecs(backend, image_service, original)
