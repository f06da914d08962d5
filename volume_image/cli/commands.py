"""The API-side commands (``validate``, ``audit``) without their
presentation: ``volume-image`` and the ``openstack volume type store``
plugin both run these and only format the results differently.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from keystoneauth1 import adapter as ks_adapter

from volume_image import config, errors
from volume_image.clients import blockstorage, glance
from volume_image.core import audit, specs, stores, validation

__all__ = [
    "AuditReport",
    "UsageError",
    "fetch_types",
    "parse_specs",
    "read_types",
    "run_audit",
    "spec_error",
    "validate",
    "validation_result",
]


class UsageError(Exception):
    """Bad command-line input (exit 2 in ``volume-image``)."""


def parse_specs(items: Sequence[str]) -> dict[str, str]:
    """``KEY=VALUE`` strings as a dict.

    :raises UsageError: an item is not ``KEY=VALUE``, or a key repeats.
    """
    result: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"{item!r} is not KEY=VALUE")
        if key in result:
            raise UsageError(f"{key!r} is given twice")
        result[key] = value
    return result


def validate(
    client: glance.GlanceClient,
    extra_specs: Mapping[str, str],
    settings: config.Settings,
) -> specs.SplitSpecs:
    """Check a whole extra-spec set as the API hook does: what an admin
    may store (namespace keys in lower case).

    :raises SpecError: a rule failed.
    :raises GlanceError: a store is named and Glance cannot be asked.
    """
    cache = validation.StoreCatalogCache(
        client.get_store_catalog, ttl=settings.store_cache_ttl
    )
    return validation.Validator(cache).validate_extra_specs(
        extra_specs, strict_case=True
    )


def validation_result(split: specs.SplitSpecs) -> dict[str, Any]:
    """A valid set, as JSON-ready data."""
    return {
        "valid": True,
        "store_id": split.store_id,
        "backend_specs": dict(split.backend),
        "image_service_specs": dict(split.image_service),
    }


def spec_error(exc: errors.SpecError) -> dict[str, Any]:
    """An invalid set, as JSON-ready data."""
    return {
        "valid": False,
        "error": type(exc).__name__,
        "message": exc.message,
        "key": exc.key,
        "value": exc.value,
        "suggestion": exc.suggestion,
    }


def read_types(path: str) -> list[audit.VolumeType]:
    """Volume types from a saved listing (``-`` for stdin).

    :raises UsageError: unreadable, not JSON, or neither known shape.
    """
    try:
        if path == "-":
            doc = json.load(sys.stdin)
        else:
            with open(path, encoding="utf-8") as stream:
                doc = json.load(stream)
    except OSError as exc:
        raise UsageError(f"cannot read {path!r}: {exc.strerror}") from exc
    except ValueError as exc:
        raise UsageError(f"{path!r} is not JSON: {exc}") from exc
    except RecursionError as exc:
        raise UsageError(f"{path!r}: its JSON is nested too deeply") from exc
    try:
        return audit.parse_volume_types(doc)
    except (ValueError, RecursionError) as exc:
        raise UsageError(f"{path!r}: {exc}") from exc


def fetch_types(
    adapter: ks_adapter.Adapter, settings: config.Settings
) -> list[audit.VolumeType]:
    """Every volume type from the block-storage API.

    :raises BlockStorageError: the API cannot be asked, or answers
        something else than volume types.
    """
    doc = blockstorage.list_volume_types(
        adapter,
        max_response_bytes=settings.max_response_bytes,
        answer_deadline=settings.answer_deadline,
    )
    try:
        return audit.parse_volume_types(doc)
    except ValueError as exc:
        raise errors.BlockStorageError(
            f"GET /types answered an unexpected document: {exc}"
        ) from exc


@dataclasses.dataclass(frozen=True)
class AuditReport:
    """What ``audit`` found.

    :ivar checked: how many types were checked.
    :ivar stores: the ids of the stores Glance listed.
    :ivar broken: types every answer of Glance refuses.
    :ivar disputed: types one answer refuses and another accepts (the
        Glance nodes behind the endpoint disagree).
    """

    checked: int
    stores: tuple[str, ...]
    broken: tuple[audit.Finding, ...]
    disputed: tuple[audit.Finding, ...]

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data."""
        return {
            "checked": self.checked,
            "stores": list(self.stores),
            "broken": [f.as_dict() for f in self.broken],
            "disputed": [f.as_dict() for f in self.disputed],
        }


def run_audit(
    types: Sequence[audit.VolumeType],
    get_catalog: Callable[[], stores.StoreCatalog],
) -> AuditReport:
    """Check every type against Glance's stores.

    A type is called broken only when three answers of Glance refuse it:
    behind a load balancer each request may reach another node, and a
    node mid-way through a config change may lack a store the others have.

    :param get_catalog: asks Glance (each call is a request).
    :raises GlanceError: Glance cannot be asked.
    """
    catalog = get_catalog()
    findings = audit.audit(types, catalog)
    if findings:
        others = [get_catalog() for _ in range(2)]
        findings = audit.audit(types, catalog, *others)
    return AuditReport(
        checked=len(types),
        stores=tuple(s.id for s in catalog.stores),
        broken=tuple(f for f in findings if not f.disputed),
        disputed=tuple(f for f in findings if f.disputed),
    )
