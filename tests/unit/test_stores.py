"""The pure store core: parsing /v2/info/stores and the four rules."""

import json
from pathlib import Path

import pytest

from volume_image import errors
from volume_image.core import stores

DATA = Path(__file__).parent.parent / "data"


def catalog() -> stores.StoreCatalog:
    return stores.parse_stores((DATA / "stores-glance33.json").read_bytes())


def test_parses_glance33_answer() -> None:
    cat = catalog()
    assert [s.id for s in cat.stores] == ["fast", "cheap", "web"]
    assert cat.default is not None and cat.default.id == "fast"
    assert cat.get("web") == stores.StoreInfo(
        id="web", description="Read-only HTTP store", read_only=True
    )
    assert cat.writable_ids == ["cheap", "fast"]
    assert cat.multistore and not cat.detailed


def test_parses_detail_with_type_and_weight() -> None:
    cat = stores.parse_stores(
        (DATA / "stores-detail-glance33.json").read_text(), detailed=True
    )
    cheap = cat.get("cheap")
    assert cheap is not None
    assert (cheap.type, cheap.weight) == ("file", 100)
    assert cat.detailed


@pytest.mark.parametrize(
    ("flag", "expected"),
    [
        ("true", True),
        ("True", True),
        ("TRUE", True),
        ("false", False),
        (True, True),
        (False, False),
        (None, False),
        ("<absent>", False),
    ],
)
def test_read_only_flag_in_every_spelling(
    flag: object, expected: bool
) -> None:
    store: dict[str, object] = {"id": "s"}
    if flag != "<absent>":
        store["read-only"] = flag
        store["default"] = flag
    cat = stores.parse_stores({"stores": [store]})
    assert cat.stores[0].read_only is expected
    assert cat.stores[0].default is expected


def test_json_boolean_read_only_store_is_rejected() -> None:
    # upstream Cinder compares with the string "true" and lets this through
    cat = stores.parse_stores({"stores": [{"id": "ro", "read-only": True}]})
    with pytest.raises(errors.ReadOnlyStore):
        stores.check_store_id("ro", cat)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"<html>oops</html>", "not JSON"),
        (b"", "not JSON"),
        (json.dumps([]), "wrong shape"),
        (json.dumps({"store": []}), "wrong shape"),
        (json.dumps({"stores": {}}), "stores"),
        (json.dumps({"stores": [{"description": "no id"}]}), "stores/0"),
        (json.dumps({"stores": [{"id": ""}]}), "stores/0/id"),
        (json.dumps({"stores": [{"id": 7}]}), "stores/0/id"),
        (
            json.dumps({"stores": [{"id": "a", "read-only": "yes"}]}),
            "read-only",
        ),
        (json.dumps({"stores": [{"id": "a", "default": 1}]}), "default"),
        (json.dumps({"stores": []}), "no stores"),
        (json.dumps({"stores": [{"id": "a"}, {"id": "a"}]}), "twice"),
        (
            json.dumps(
                {
                    "stores": [
                        {"id": "a", "default": "true"},
                        {"id": "b", "default": True},
                    ]
                }
            ),
            "more than one store as default",
        ),
    ],
)
def test_bad_answers_get_their_own_message(
    body: object, fragment: str
) -> None:
    with pytest.raises(errors.BadStoreCatalog) as info:
        stores.parse_stores(body)  # type: ignore[arg-type]
    assert fragment in str(info.value)
    assert info.value.exit_code == 4


@pytest.mark.parametrize(
    ("value", "error", "fragment"),
    [
        (None, errors.InvalidStoreId, "must be a string"),
        (7, errors.InvalidStoreId, "must be a string"),
        ("", errors.InvalidStoreId, "is empty"),
        ("a" * 256, errors.InvalidStoreId, "256 characters"),
        (" cheap", errors.InvalidStoreId, "did you mean 'cheap'"),
        ("cheap ", errors.InvalidStoreId, "whitespace"),
        ("cheap\r\nX-Evil: 1", errors.InvalidStoreId, "control characters"),
        ("cheap\n", errors.InvalidStoreId, "control characters"),
        ("ch\x00eap", errors.InvalidStoreId, "control characters"),
        ("os_glance_staging_store", errors.ReservedStore, "reserved"),
        ("OS_GLANCE_tasks_store", errors.ReservedStore, "reserved"),
        ("nosuch", errors.UnknownStore, "writable stores (cheap, fast)"),
        ("web", errors.ReadOnlyStore, "read-only"),
    ],
)
def test_rules(value: object, error: type[Exception], fragment: str) -> None:
    with pytest.raises(error) as info:
        stores.check_store_id(value, catalog())
    assert fragment in str(info.value)
    assert isinstance(info.value, errors.SpecError)
    assert info.value.api_status == 400 and info.value.exit_code == 3


def test_reserved_is_rejected_even_when_glance_lists_it() -> None:
    cat = stores.parse_stores({"stores": [{"id": "os_glance_staging_store"}]})
    with pytest.raises(errors.ReservedStore):
        stores.check_store_id("os_glance_staging_store", cat)


def test_rule_order_syntax_before_reserved_before_lookup() -> None:
    with pytest.raises(errors.InvalidStoreId):
        stores.check_store_id(" os_glance_x", catalog())
    with pytest.raises(errors.ReservedStore):
        stores.check_store_id(
            "os_glance_x", stores.StoreCatalog(multistore=False)
        )


@pytest.mark.parametrize(
    ("value", "suggestion"),
    [
        ("CHEAP", "cheap"),
        ("chep", "cheap"),
        ("Fats", "fast"),
        ("fsat", "fast"),
        ("zzz", None),
    ],
)
def test_did_you_mean(value: str, suggestion: str | None) -> None:
    with pytest.raises(errors.UnknownStore) as info:
        stores.check_store_id(value, catalog())
    assert info.value.suggestion == suggestion
    if suggestion:
        assert f"Did you mean {suggestion!r}?" in str(info.value)
    else:
        assert "Did you mean" not in str(info.value)


def test_valid_store_is_returned() -> None:
    assert stores.check_store_id("cheap", catalog()).id == "cheap"


def test_no_multistore_says_so() -> None:
    with pytest.raises(errors.MultiStoreDisabled) as info:
        stores.check_store_id("cheap", stores.StoreCatalog(multistore=False))
    assert "without multi-store" in str(info.value)
    # the spec is what cannot be honoured: a spec problem
    assert isinstance(info.value, errors.SpecError)
    assert not isinstance(info.value, errors.GlanceError)
    assert info.value.api_status == 400 and info.value.exit_code == 3


def test_control_characters_in_an_id_are_refused() -> None:
    body = b'{"stores": [{"id": "fa\\u001b]0;x\\u0007st", "default": "true"}]}'
    with pytest.raises(errors.BadStoreCatalog, match="control characters"):
        stores.parse_stores(body)


def test_look_alikes_and_long_listings_in_messages() -> None:
    ids = ["\u0441heap"] + [f"s{i:04d}" for i in range(3000)]
    doc = {"stores": [{"id": i} for i in ids]}
    doc["stores"][1]["default"] = "true"
    catalog = stores.parse_stores(json.dumps(doc).encode())
    with pytest.raises(errors.UnknownStore) as info:
        stores.check_store_id("cheap", catalog, "image_service:store_id")
    message = info.value.message
    assert "\\u0441heap" in message and "\u0441" not in message
    assert "and 2991 more" in message
    assert len(message) < 500


def test_deeply_nested_json_is_a_clean_error() -> None:
    deep = b"[" * 100000 + b"]" * 100000
    with pytest.raises(errors.BadStoreCatalog):
        stores.parse_stores(deep)


@pytest.mark.parametrize("store_id", ["\u5b58\u50a8", "caf\u00e9-\u20ac"])
def test_a_store_no_header_can_carry_is_invalid(store_id: str) -> None:
    """Glance 33 lists such a store; an upload to it could only crash in
    http.client, so it is refused as a spec with the reason.
    """
    cat = stores.parse_stores({"stores": [{"id": store_id}, {"id": "s"}]})
    with pytest.raises(errors.InvalidStoreId, match="Latin-1") as info:
        stores.check_store_id(store_id, cat)
    assert info.value.exit_code == 3
    assert "X-Image-Meta-Store" in info.value.message
    # what a header carries is still a valid id
    latin = stores.parse_stores({"stores": [{"id": "caf\u00e9"}]})
    assert stores.check_store_id("caf\u00e9", latin).id == "caf\u00e9"
