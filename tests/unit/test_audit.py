"""audit: parsing both file shapes, findings, and listing from Cinder."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
import requests_mock
from keystoneauth1 import adapter, session

from volume_image import errors
from volume_image.clients import blockstorage
from volume_image.core import audit, stores

KEY = "image_service:store_id"
CAT = stores.parse_stores(
    {
        "stores": [
            {"id": "fast", "default": "true"},
            {"id": "cheap"},
            {"id": "web", "read-only": "true"},
        ]
    }
)
CINDER = "http://cinder.test/v3/p1"


def test_api_document() -> None:
    doc = {
        "volume_types": [
            {"id": "1", "name": "a", "extra_specs": {KEY: "cheap"}},
            {"id": "2", "name": "b", "extra_specs": {KEY: "gone"}},
            {
                "id": "3",
                "name": "c",
                "extra_specs": {"Image_Service:Store_Id": "fast"},
            },
            {"id": "4", "name": "d", "extra_specs": {}},
        ]
    }
    found = audit.audit(audit.parse_volume_types(doc), CAT)
    assert [(f.type_id, f.reason) for f in found] == [
        ("2", "UnknownStore"),
        ("3", "UnknownSpecKey"),
    ]
    assert found[0].value == "gone"
    assert found[1].suggestion == KEY
    assert found[0].as_dict()["type_name"] == "b"


def test_openstackclient_listing_both_property_forms() -> None:
    listing = [
        {"ID": "1", "Name": "a", "Properties": {KEY: "web"}},
        {
            "ID": "2",
            "Name": "b",
            "Properties": "image_service:store_id='x y', k='a,b'",
        },
        {"ID": "3", "Name": "c", "Properties": ""},
        {"ID": "4", "Name": "d", "Properties": None},
    ]
    types = audit.parse_volume_types(listing)
    assert types[1].extra_specs == {KEY: "x y", "k": "a,b"}
    assert types[2].extra_specs == {}
    found = audit.audit(types, CAT)
    assert [(f.type_id, f.reason) for f in found] == [
        ("1", "ReadOnlyStore"),
        ("2", "UnknownStore"),
    ]


def test_single_store_glance_breaks_every_store_spec() -> None:
    single = stores.StoreCatalog(stores=(), multistore=False, detailed=False)
    types = audit.parse_volume_types(
        {
            "volume_types": [
                {"id": "1", "name": "a", "extra_specs": {KEY: "fast"}},
                {"id": "2", "name": "b", "extra_specs": {"x": "y"}},
            ]
        }
    )
    found = audit.audit(types, single)
    assert [(f.type_id, f.reason, f.value) for f in found] == [
        ("1", "MultiStoreDisabled", "fast")
    ]


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"types": []}, "expected"),
        ("x", "expected"),
        ({"volume_types": {}}, "must be a list"),
        ([{"Name": "a"}], "no 'ID'"),
        ([{"ID": "1", "Name": "a"}], "use --long"),
        ([{"ID": "1", "Properties": "garbage"}], "cannot read"),
        ([{"ID": "1", "Properties": 5}], "must be an object"),
    ],
)
def test_bad_documents(doc: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        audit.parse_volume_types(doc)


def bs_adapter() -> adapter.Adapter:
    return adapter.Adapter(
        session.Session(timeout=5), endpoint_override=CINDER
    )


def test_list_follows_pages(rmock: requests_mock.Mocker) -> None:
    rmock.get(
        CINDER + "/types?is_public=None",
        json={
            "volume_types": [{"id": "1"}],
            "volume_types_links": [
                {"rel": "next", "href": CINDER + "/types?marker=1"}
            ],
        },
    )
    rmock.get(CINDER + "/types?marker=1", json={"volume_types": [{"id": "2"}]})
    doc = blockstorage.list_volume_types(bs_adapter())
    assert [t["id"] for t in doc["volume_types"]] == ["1", "2"]


@pytest.mark.parametrize(
    "href",
    [
        "http://evil.test/v3/p1/types?marker=1",
        "https://cinder.test/v3/p1/types?marker=1",  # another scheme
        "http://cinder.test:8776/v3/p1/types?marker=1",  # another port
        "//evil.test/types?marker=1",
        "http:evil.test/types",
        "/types?marker=1\r\nX-Evil: 1",
    ],
)
def test_a_next_link_to_another_origin_is_not_followed(
    rmock: requests_mock.Mocker, href: str
) -> None:
    """The token goes wherever a request goes: a page link is followed
    only on the endpoint's scheme, host and port.
    """
    rmock.get(
        CINDER + "/types?is_public=None",
        json={
            "volume_types": [{"id": "1"}],
            "volume_types_links": [{"rel": "next", "href": href}],
        },
    )
    with pytest.raises(errors.BlockStorageError, match="not followed"):
        blockstorage.list_volume_types(bs_adapter())
    assert len(rmock.request_history) == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"status_code": 403, "text": "forbidden"}, "admin role"),
        ({"status_code": 204}, "answered 204"),
        ({"text": "not json"}, "not JSON"),
        ({"json": {"types": []}}, "without a volume_types list"),
    ],
)
def test_list_errors(
    rmock: requests_mock.Mocker, kwargs: dict[str, object], message: str
) -> None:
    rmock.get(CINDER + "/types?is_public=None", **kwargs)
    with pytest.raises(errors.BlockStorageError, match=message) as info:
        blockstorage.list_volume_types(bs_adapter())
    assert info.value.exit_code == 4


def test_one_nodes_word_is_not_enough() -> None:
    """Behind a load balancer, one node lacks 'cheap' during a rolling
    change: a type naming it is disputed, not broken; a type every answer
    refuses stays broken.
    """
    types = [
        audit.VolumeType(
            "t1", "uses-cheap", {"image_service:store_id": "cheap"}
        ),
        audit.VolumeType(
            "t2", "uses-nosuch", {"image_service:store_id": "nosuch"}
        ),
    ]
    full = stores.parse_stores(
        b'{"stores": [{"id": "fast", "default": "true"}, {"id": "cheap"}]}'
    )
    lacking = stores.parse_stores(
        b'{"stores": [{"id": "fast", "default": "true"}]}'
    )
    found = audit.audit(types, lacking, full)
    assert [(f.type_id, f.disputed) for f in found] == [
        ("t1", True),
        ("t2", False),
    ]
    assert [f.disputed for f in audit.audit(types, lacking, lacking)] == [
        False,
        False,
    ]


def test_audit_from_a_deeply_nested_file_is_a_usage_error(
    tmp_path: Path,
) -> None:
    import io

    from volume_image.cli import main as cli

    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100000 + "]" * 100000)
    err = io.StringIO()
    code = cli.main(
        ["--os-auth-type", "none", "--os-endpoint", "http://127.0.0.1:9",
         "audit", "--from-file", str(deep)],
        out=io.StringIO(), err=err,
    )  # fmt: skip
    assert code == 2, err.getvalue()
    assert "nested too deeply" in err.getvalue()
    assert "Traceback" not in err.getvalue()


@pytest.mark.parametrize(
    ("answer", "words"),
    [
        (
            {"exc": requests.exceptions.ConnectTimeout},
            "Keystone is unavailable",
        ),
        ({"status_code": 503, "text": "down"}, "Keystone is unavailable"),
        ({"status_code": 401, "text": "no"}, "check the user, password"),
    ],
)
def test_keystone_failures_are_keystones(
    rmock: requests_mock.Mocker, answer: dict[str, object], words: str
) -> None:
    """audit never blames the block-storage API for Keystone."""
    from keystoneauth1.identity import v3

    auth_url = "http://keystone.test:5000/v3"
    rmock.post(auth_url + "/auth/tokens", **answer)
    auth = v3.Password(
        auth_url=auth_url, username="u", password="p", project_name="p",
        user_domain_id="default", project_domain_id="default",
    )  # fmt: skip
    bs = adapter.Adapter(
        session.Session(auth=auth, timeout=5), endpoint_override=CINDER
    )
    with pytest.raises(errors.BlockStorageError, match=words) as info:
        blockstorage.list_volume_types(bs)
    assert "block-storage API" not in str(info.value)
    assert not [r for r in rmock.request_history if "cinder" in r.url]
