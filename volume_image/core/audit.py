"""Check every volume type against one store catalog.  Pure: the caller
fetches the types and the catalog.

Operators run ``volume-image audit`` after they change Glance's stores: a
type whose ``image_service:store_id`` names a store that is gone, or has
become read-only, otherwise goes unnoticed until an upload fails.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from typing import Any

from volume_image import errors
from volume_image.core import stores, validation

__all__ = ["Finding", "VolumeType", "audit", "parse_volume_types"]


@dataclasses.dataclass(frozen=True)
class VolumeType:
    """A volume type as far as the audit cares."""

    id: str
    name: str
    extra_specs: Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class Finding:
    """One broken volume type.

    :ivar reason: the error class that the spec would raise, e.g.
        ``UnknownStore``.
    """

    type_id: str
    type_name: str
    key: str | None
    value: Any
    reason: str
    message: str
    suggestion: str | None
    #: another answer of Glance (another node behind the same endpoint)
    #: accepts this spec: the nodes disagree, the type may be fine
    disputed: bool = False

    def as_dict(self) -> dict[str, Any]:
        """The finding as JSON-ready data."""
        return dataclasses.asdict(self)


def audit(
    types: Iterable[VolumeType],
    catalog: stores.StoreCatalog,
    *others: stores.StoreCatalog,
) -> list[Finding]:
    """Check each type's extra specs against ``catalog``.

    The rules are the API hook's, lower-case keys included: a key Cinder
    would ignore is a broken type too.

    :param others: more answers of the same Glance endpoint (several
        nodes behind a load balancer); a finding that one of them does
        not confirm is marked ``disputed`` instead of broken.
    :returns: one finding per broken type, in the order given.
    """
    findings = _check(types, catalog)
    for other in others:
        accepted = {f.type_id for f in findings} - {
            f.type_id for f in _check(types, other)
        }
        findings = [
            dataclasses.replace(f, disputed=True)
            if f.type_id in accepted
            else f
            for f in findings
        ]
    return findings


def _check(
    types: Iterable[VolumeType], catalog: stores.StoreCatalog
) -> list[Finding]:
    # the one validator, over the list fetched beforehand (no I/O here)
    validator = validation.Validator(
        validation.StoreCatalogCache.fixed(catalog)
    )
    findings = []
    for vtype in types:
        try:
            validator.validate_extra_specs(vtype.extra_specs, strict_case=True)
        except errors.SpecError as exc:
            findings.append(_finding(vtype, exc, exc.key, exc.value))
    return findings


def _finding(
    vtype: VolumeType, exc: errors.VolumeImageError, key: Any, value: Any
) -> Finding:
    return Finding(
        type_id=vtype.id,
        type_name=vtype.name,
        key=key,
        value=value,
        reason=type(exc).__name__,
        message=exc.message,
        suggestion=getattr(exc, "suggestion", None),
    )


# "a='1', b='x y'": how older openstackclient releases print properties
_PROPERTY = re.compile(r"\s*([^=,\s]+)\s*=\s*'((?:[^'\\]|\\.)*)'\s*(?:,|$)")


def _properties(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    if isinstance(value, str):
        found: dict[str, Any] = {}
        pos = 0
        while pos < len(value):
            match = _PROPERTY.match(value, pos)
            if match is None:
                raise ValueError(f"{where}: cannot read properties {value!r}")
            found[match.group(1)] = match.group(2)
            pos = match.end()
        return found
    raise ValueError(f"{where}: extra specs must be an object")


def parse_volume_types(doc: Any) -> list[VolumeType]:
    """Read volume types from either document an operator may have:

    * the block-storage API's ``GET /types`` answer,
      ``{"volume_types": [{"id", "name", "extra_specs"}, ...]}``;
    * ``openstack volume type list --long -f json``,
      ``[{"ID", "Name", "Properties"}, ...]``, with properties as an
      object or, from older clients, as ``"key='value', ..."``.

    :raises ValueError: neither shape; the message says where.
    """
    if isinstance(doc, dict) and "volume_types" in doc:
        items = doc["volume_types"]
        id_key, name_key, specs_key = "id", "name", "extra_specs"
    elif isinstance(doc, list):
        items = doc
        id_key, name_key, specs_key = "ID", "Name", "Properties"
    else:
        raise ValueError(
            'expected {"volume_types": [...]} (the API\'s answer) or a '
            "list (openstack volume type list --long -f json)"
        )
    if not isinstance(items, list):
        raise ValueError("volume_types must be a list")
    types = []
    for index, item in enumerate(items):
        where = f"volume type #{index}"
        if not isinstance(item, dict) or id_key not in item:
            raise ValueError(f"{where}: no {id_key!r}")
        if specs_key not in item:
            hint = " (use --long)" if id_key == "ID" else ""
            raise ValueError(f"{where}: no {specs_key!r}{hint}")
        types.append(
            VolumeType(
                id=str(item[id_key]),
                name=str(item.get(name_key) or ""),
                extra_specs=_properties(item[specs_key], where),
            )
        )
    return types
