"""The same-cluster fast path: the pure decision, the location URL, and
Glance's location API at the HTTP edge."""

import dataclasses

import pytest
import requests_mock

from volume_image.clients import glance
from volume_image.core import direct, stores

from .conftest import URL

FSID = "2b9a1f3e-5c6d-4e7f-8a9b-0c1d2e3f4a5b"
RBD = stores.StoreInfo(
    id="fast", type="rbd", fsid=FSID, pool="images", default=True
)

GOOD = dict(
    enabled=True,
    disk_format="raw",
    container_format="bare",
    store=RBD,
    detailed=True,
    volume_fsid=FSID,
    service_token=True,
)


def test_same_cluster_raw_goes_direct() -> None:
    d = direct.decide(**GOOD)  # type: ignore[arg-type]
    assert d.direct
    assert (d.store, d.pool, d.fsid) == ("fast", "images", FSID)


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"enabled": False}, "rbd_direct_upload is off"),
        ({"disk_format": "qcow2"}, "disk_format qcow2 needs a conversion"),
        ({"container_format": "compressed"}, "compressed"),
        ({"store": None}, "not in Glance's list"),
        ({"detailed": False}, "stores/detail"),
        (
            {"store": dataclasses.replace(RBD, type="file")},
            "store fast is a file store",
        ),
        (
            {"store": dataclasses.replace(RBD, fsid=None)},
            "fsid and pool",
        ),
        (
            {"store": dataclasses.replace(RBD, read_only=True)},
            "does not take uploads",
        ),
        (
            {"volume_fsid": "other-fsid"},
            f"on Ceph cluster {FSID}, the volume on other-fsid",
        ),
        ({"service_token": False}, "send_service_user_token"),
    ],
)
def test_every_reason_to_stream_is_named(
    change: dict[str, object], why: str
) -> None:
    d = direct.decide(**{**GOOD, **change})  # type: ignore[arg-type]
    assert not d.direct
    assert why in d.reason


def test_location_is_what_glance_store_writes() -> None:
    assert (
        direct.location_url(FSID, "images", "i-1")
        == f"rbd://{FSID}/images/i-1/snap"
    )
    # Glance matches the quoted prefix: quote as glance_store does
    assert direct.location_url("a/b", "p o", "i") == "rbd://a%2Fb/p%20o/i/snap"


def test_detail_gives_an_rbd_stores_cluster_and_pool() -> None:
    cat = stores.parse_stores(
        {
            "stores": [
                {
                    "id": "fast",
                    "type": "rbd",
                    "properties": {
                        "pool": "images",
                        "fsid": FSID,
                        "chunk_size": 8388608,
                    },
                },
                {"id": "shared", "type": "file", "properties": {}},
                {"id": "odd", "type": "rbd", "properties": {"pool": 5}},
            ]
        },
        detailed=True,
    )
    assert (cat.get("fast").fsid, cat.get("fast").pool) == (FSID, "images")  # type: ignore[union-attr]
    assert cat.get("shared").fsid is None  # type: ignore[union-attr]
    assert cat.get("odd").pool is None  # type: ignore[union-attr]


@pytest.mark.parametrize("status", [202, 403, 404, 405, 409])
def test_add_location_answers(
    client: glance.GlanceClient, rmock: requests_mock.Mocker, status: int
) -> None:
    rmock.post(
        URL + "/v2/images/i1/locations",
        status_code=status,
        json={} if status == 202 else {"message": "nope"},
    )
    answer = client.add_location("i1", "rbd://f/p/i1/snap")
    assert answer.status == status
    assert rmock.last_request.json() == {"url": "rbd://f/p/i1/snap"}
    assert (answer.message == "") is (status == 202)


def test_co_location_chooses_the_stores_so_it_streams() -> None:
    d = direct.decide(**{**GOOD, "colocating": True})  # type: ignore[arg-type]
    assert not d.direct
    assert "colocate_with_base_image" in d.reason
