"""Extra specs: the image_service: namespace split and the validator."""

from typing import Any

import pytest

from volume_image import errors
from volume_image.core import specs, stores, validation


def catalog() -> stores.StoreCatalog:
    return stores.parse_stores(
        {
            "stores": [
                {"id": "fast", "default": "true"},
                {"id": "cheap"},
                {"id": "web", "read-only": "true"},
            ]
        }
    )


def test_split_removes_the_namespace_for_backends() -> None:
    split = specs.split_extra_specs(
        {
            "volume_backend_name": "lvm",
            "image_service:store_id": "cheap",
            "capabilities:thin": "<is> True",
        }
    )
    assert split.backend == {
        "volume_backend_name": "lvm",
        "capabilities:thin": "<is> True",
    }
    assert split.image_service == {"image_service:store_id": "cheap"}
    assert split.store_id == "cheap" and split.has_store_id


@pytest.mark.parametrize(
    "key",
    [
        "Image_Service:Store_Id",
        "IMAGE_SERVICE:STORE_ID",
        "image_service:Store_id",
    ],
)
def test_namespace_keys_match_in_any_case(key: str) -> None:
    split = specs.split_extra_specs({key: "cheap"})
    assert split.store_id == "cheap"
    assert split.original_keys["image_service:store_id"] == key
    assert split.backend == {}


def test_same_key_twice_in_two_cases_conflicts() -> None:
    with pytest.raises(errors.ConflictingSpecKeys):
        specs.split_extra_specs(
            {
                "image_service:store_id": "cheap",
                "Image_Service:Store_Id": "fast",
            }
        )


@pytest.mark.parametrize(
    ("key", "suggestion"),
    [
        ("image_service:storeid", "image_service:store_id"),
        ("image_service:store", "image_service:store_id"),
        ("image_service:colour", None),
    ],
)
def test_unknown_namespace_key_is_a_probable_typo(
    key: str, suggestion: str | None
) -> None:
    with pytest.raises(errors.UnknownSpecKey) as info:
        specs.split_extra_specs({key: "cheap"})
    assert info.value.suggestion == suggestion
    assert "would be ignored" in str(info.value)


def test_glance_is_not_asked_without_a_store() -> None:
    def boom() -> stores.StoreCatalog:
        raise errors.GlanceUnavailable("down")

    split = validator(boom).validate_extra_specs(
        {"volume_backend_name": "lvm"}
    )
    assert split.backend == {"volume_backend_name": "lvm"}


def test_local_rules_need_no_glance() -> None:
    def boom() -> stores.StoreCatalog:
        raise errors.GlanceUnavailable("down")

    with pytest.raises(errors.ReservedStore):
        validator(boom).validate_extra_specs(
            {"image_service:store_id": "os_glance_tasks_store"}
        )
    with pytest.raises(errors.GlanceUnavailable):
        validator(boom).validate_extra_specs(
            {"image_service:store_id": "cheap"}
        )


def validator(fetch: Any) -> validation.Validator:
    """The one validator, over ``fetch`` (no cache)."""
    return validation.Validator(validation.StoreCatalogCache(fetch, ttl=0))


@pytest.mark.parametrize(
    ("extra", "error"),
    [
        ({"image_service:store_id": "cheap"}, None),
        ({"Image_Service:Store_Id": "nosuch"}, errors.UnknownStore),
        ({"IMAGE_SERVICE:STORE_ID": "web"}, errors.ReadOnlyStore),
        ({"image_service:store_id": None}, errors.InvalidStoreId),
        ({"image_service:store_id": "cheap "}, errors.InvalidStoreId),
    ],
)
def test_validate_extra_specs(
    extra: dict[str, object], error: type[Exception] | None
) -> None:
    if error is None:
        split = validator(catalog).validate_extra_specs(extra)
        assert split.store_id == "cheap"
    else:
        with pytest.raises(error) as info:
            validator(catalog).validate_extra_specs(extra)
        # the message names the key as the caller wrote it
        assert next(iter(extra)) in str(info.value)


def test_strict_case_refuses_a_key_cinder_would_ignore() -> None:
    with pytest.raises(errors.UnknownSpecKey) as info:
        specs.split_extra_specs(
            {"Image_Service:Store_Id": "fast"}, strict_case=True
        )
    assert info.value.suggestion == "image_service:store_id"
    assert "lower-case" in str(info.value)
    split = specs.split_extra_specs(
        {"image_service:store_id": "fast"}, strict_case=True
    )
    assert split.store_id == "fast"


@pytest.mark.parametrize("key", [1, None, ("image_service", "store_id")])
def test_a_key_that_is_not_a_string_is_a_spec_error(key: object) -> None:
    with pytest.raises(errors.SpecError, match="not a string"):
        specs.split_extra_specs({key: "cheap"})  # type: ignore[dict-item]
