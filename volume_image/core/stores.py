"""Glance stores, parsed and checked. Pure: no I/O here.

:func:`parse_stores` turns the body of ``GET /v2/info/stores`` (or
``/detail``) into a :class:`StoreCatalog`; :func:`check_store_id` applies
the validation rules to one ``image_service:store_id`` value, in order:

1. syntax (a non-empty string of at most 255 characters, no surrounding
   whitespace, no control characters, only characters the
   ``x-image-meta-store`` header can carry: Latin-1),
2. the reserved ``os_glance_`` prefix,
3. the id is known to Glance,
4. the store is writable.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import unicodedata
from collections.abc import Iterable
from typing import Any

from volume_image import errors
from volume_image.core.text import shown

__all__ = [
    "RESERVED_PREFIX",
    "STORE_HEADER",
    "STORE_ID_MAX_LENGTH",
    "StoreCatalog",
    "StoreInfo",
    "check_store_id",
    "check_store_id_syntax",
    "parse_stores",
]

RESERVED_PREFIX = "os_glance_"
#: the header an upload names its store in
STORE_HEADER = "X-Image-Meta-Store"
# Cinder's extra-spec value limit; Glance store ids are far shorter.
STORE_ID_MAX_LENGTH = 255

# Glance 33 sends "true"/"false" strings, others send JSON booleans, and an
# absent flag means false.  Cinder compares with the string "true" only and
# so takes a store flagged read-only by a JSON boolean as writable.
_FLAG = {
    "anyOf": [
        {"type": "boolean"},
        {"type": "null"},
        {
            "type": "string",
            "pattern": "^([Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee])$",
        },
    ]
}

STORES_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["stores"],
    "properties": {
        "stores": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["id"],
                "properties": {
                    "id": {"type": "string", "minLength": 1},
                    "description": {"type": ["string", "null"]},
                    "default": _FLAG,
                    "read-only": _FLAG,
                    "type": {"type": ["string", "null"]},
                    "weight": {"type": ["number", "null"]},
                    "properties": {"type": ["object", "null"]},
                },
            },
        }
    },
}


@functools.cache
def _validator() -> Any:
    # jsonschema costs ~30 ms to import: only when a list is parsed
    import jsonschema

    return jsonschema.Draft202012Validator(STORES_SCHEMA)


@dataclasses.dataclass(frozen=True)
class StoreInfo:
    """One Glance store, as ``/v2/info/stores`` describes it.

    ``type`` and ``weight`` are only known from ``/v2/info/stores/detail``,
    which needs the admin role.
    """

    id: str
    description: str = ""
    default: bool = False
    read_only: bool = False
    type: str | None = None
    weight: float | None = None
    #: an rbd store's Ceph cluster and pool (``/detail`` only)
    fsid: str | None = None
    pool: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """Return the store as a JSON-ready dict with real booleans."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class StoreCatalog:
    """The stores one Glance offers.

    ``multistore`` is false for a Glance without ``enabled_backends``
    (``/v2/info/stores`` answers 404); such a catalog has no stores and
    cannot honour any ``image_service:store_id``.
    """

    stores: tuple[StoreInfo, ...] = ()
    multistore: bool = True
    detailed: bool = False

    def get(self, store_id: str) -> StoreInfo | None:
        """Return the store with exactly this id, or None."""
        for store in self.stores:
            if store.id == store_id:
                return store
        return None

    @property
    def default(self) -> StoreInfo | None:
        """The store Glance writes to when no store is named."""
        for store in self.stores:
            if store.default:
                return store
        return None

    @property
    def writable_ids(self) -> list[str]:
        """Ids of the stores that accept uploads, sorted."""
        return sorted(s.id for s in self.stores if not s.read_only)


def _text(value: object) -> str | None:
    """A store property that must be a non-empty string, or None."""
    return value if isinstance(value, str) and value else None


def _flag(value: object) -> bool:
    if isinstance(value, str):
        return value.lower() == "true"
    return value is True


def parse_stores(
    body: bytes | str | Any, *, detailed: bool = False
) -> StoreCatalog:
    """Parse the body of ``GET /v2/info/stores``.

    :param body: the raw body (bytes or str) or an already decoded document.
    :param detailed: whether it came from ``/v2/info/stores/detail``.
    :returns: the catalog.
    :raises BadStoreCatalog: not JSON, the wrong shape, no stores,
        duplicate ids, or more than one default store.
    """
    if isinstance(body, bytes | str):
        try:
            doc = json.loads(body)
        except RecursionError as exc:
            raise errors.BadStoreCatalog(
                "Glance's store list is JSON nested too deeply to be a "
                "store list"
            ) from exc
        except ValueError as exc:
            raise errors.BadStoreCatalog(
                f"Glance's store list is not JSON ({exc}); check that the "
                "endpoint is a Glance image API"
            ) from exc
    else:
        doc = body
    import jsonschema

    error = jsonschema.exceptions.best_match(_validator().iter_errors(doc))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "the document"
        raise errors.BadStoreCatalog(
            f"Glance's store list has the wrong shape at {where}: "
            f"{error.message}"
        )
    stores = tuple(
        StoreInfo(
            id=item["id"],
            description=item.get("description") or "",
            default=_flag(item.get("default")),
            read_only=_flag(item.get("read-only")),
            type=item.get("type"),
            weight=item.get("weight"),
            fsid=_text((item.get("properties") or {}).get("fsid")),
            pool=_text((item.get("properties") or {}).get("pool")),
        )
        for item in doc["stores"]
    )
    if not stores:
        raise errors.BadStoreCatalog(
            "Glance lists no stores; check enabled_backends in glance-api.conf"
        )
    seen: set[str] = set()
    for store in stores:
        if _has_control(store.id):
            raise errors.BadStoreCatalog(
                f"Glance lists store {shown(store.id)}, an id with control "
                "characters; its store list cannot be trusted"
            )
        if store.id in seen:
            raise errors.BadStoreCatalog(
                f"Glance lists store {shown(store.id)} twice; its store list "
                "cannot be trusted"
            )
        seen.add(store.id)
    defaults = [s.id for s in stores if s.default]
    if len(defaults) > 1:
        raise errors.BadStoreCatalog(
            "Glance marks more than one store as default "
            f"({', '.join(defaults)}); check default_backend in "
            "glance-api.conf"
        )
    return StoreCatalog(stores=stores, detailed=detailed)


#: store ids named in one message at most: a Glance may list thousands
_LISTED = 10


def _listing(ids: list[str]) -> str:
    """Store ids for a message: look-alikes escaped, at most ``_LISTED``."""
    named = [i if i.isascii() else ascii(i)[1:-1] for i in ids[:_LISTED]]
    more = len(ids) - len(named)
    return (", ".join(named) or "none") + (f" and {more} more" if more else "")


def _has_control(value: str) -> bool:
    return any(unicodedata.category(ch) == "Cc" for ch in value)


def _sendable(value: str) -> bool:
    """Whether an HTTP header (http.client encodes Latin-1) can carry it."""
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def check_store_id_syntax(
    value: object, key: str = "image_service:store_id"
) -> str:
    """Apply rules 1 and 2, which need no Glance.

    :param value: the spec value as the API received it.
    :param key: the spec key, for the message.
    :returns: the value, known to be a clean string.
    :raises InvalidStoreId: not a string, empty, too long, surrounding
        whitespace or control characters.
    :raises ReservedStore: the ``os_glance_`` prefix.
    """

    def invalid(why: str) -> errors.InvalidStoreId:
        return errors.InvalidStoreId(
            f"{key} {why}; set it to the id of a Glance store "
            "(see 'volume-image stores') or unset it to use the default store",
            key=key,
            value=value,
        )

    if not isinstance(value, str):
        raise invalid(f"must be a string, not {type(value).__name__}")
    if not value:
        raise invalid("is empty")
    if len(value) > STORE_ID_MAX_LENGTH:
        raise invalid(
            f"is {len(value)} characters long (at most {STORE_ID_MAX_LENGTH})"
        )
    # before the whitespace rule: "\n" is both, and the control
    # character is what must never reach an HTTP header
    if _has_control(value):
        raise invalid(f"{shown(value)} contains control characters")
    if value != value.strip():
        raise invalid(
            f"{shown(value)} has leading or trailing whitespace "
            f"(did you mean {shown(value.strip())}?)"
        )
    if not _sendable(value):
        raise invalid(
            f"{shown(value)} cannot be sent to Glance: an upload names its "
            f"store in the {STORE_HEADER} HTTP header, which carries only "
            "Latin-1 characters (give the store an ASCII id in Glance's "
            "enabled_backends)"
        )
    if value.lower().startswith(RESERVED_PREFIX):
        raise errors.ReservedStore(
            f"{key} {shown(value)} names a store reserved for Glance's "
            f"internal use (the {RESERVED_PREFIX} prefix); choose one of the "
            "stores "
            "that 'volume-image stores' lists",
            key=key,
            value=value,
        )
    return value


def _suggest(value: str, candidates: Iterable[str]) -> str | None:
    candidates = list(candidates)
    for cand in candidates:
        if cand.lower() == value.lower():
            return cand
    close = difflib.get_close_matches(value, candidates, n=1, cutoff=0.6)
    if not close:
        lowered = {c.lower(): c for c in candidates}
        close = [
            lowered[m]
            for m in difflib.get_close_matches(
                value.lower(), lowered, n=1, cutoff=0.6
            )
        ]
    return close[0] if close else None


def check_store_id(
    value: object,
    catalog: StoreCatalog,
    key: str = "image_service:store_id",
) -> StoreInfo:
    """Apply all four rules to one store id.

    :param value: the spec value.
    :param catalog: what Glance offers.
    :param key: the spec key, for the message.
    :returns: the store the value names.
    :raises SpecError: a subclass for each rule that fails.
    :raises MultiStoreDisabled: Glance has no multi-store.
    """
    store_id = check_store_id_syntax(value, key)
    if not catalog.multistore:
        raise errors.MultiStoreDisabled(
            f"{key}={shown(store_id)} cannot be honoured: this Glance runs "
            "without multi-store (no enabled_backends), and it ignores the "
            "store of an upload; unset the spec or enable multi-store in "
            "Glance",
            key=key,
            value=store_id,
            status_code=404,
        )
    store = catalog.get(store_id)
    listing = _listing(catalog.writable_ids)
    if store is None:
        suggestion = _suggest(store_id, (s.id for s in catalog.stores))
        hint = f" Did you mean {shown(suggestion)}?" if suggestion else ""
        default = catalog.default
        fallback = (
            f", or unset it to use the default store {shown(default.id)}"
            if default
            else ""
        )
        raise errors.UnknownStore(
            f"Glance has no store {shown(store_id)}.{hint} Set {key} to one "
            f"of the writable stores ({listing}){fallback}.",
            key=key,
            value=store_id,
            suggestion=suggestion,
        )
    if store.read_only:
        raise errors.ReadOnlyStore(
            f"Glance store {shown(store_id)} is read-only: images cannot be "
            f"uploaded to it. Set {key} to one of the writable stores "
            f"({listing}).",
            key=key,
            value=store_id,
        )
    return store
