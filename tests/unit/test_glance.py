"""The HTTP edge: every Glance answer becomes the right error."""

import json
from pathlib import Path

import pytest
import requests
import requests_mock
from keystoneauth1 import adapter, session

from volume_image import errors
from volume_image.clients import glance

from .conftest import URL

DATA = Path(__file__).parent.parent / "data"
STORES = URL + "/v2/info/stores"
DETAIL = STORES + "/detail"
BASIC = (DATA / "stores-glance33.json").read_text()


def test_detail_is_used_when_allowed(
    rmock: requests_mock.Mocker, client: glance.GlanceClient
) -> None:
    rmock.get(DETAIL, text=(DATA / "stores-detail-glance33.json").read_text())
    cat = client.get_store_catalog()
    assert cat.detailed
    assert cat.get("cheap") is not None and cat.get("cheap").weight == 100  # type: ignore[union-attr]
    assert rmock.call_count == 1
    assert rmock.last_request.headers["Accept"] == "application/json"


def test_detail_forbidden_falls_back_for_this_caller_only(
    rmock: requests_mock.Mocker, client: glance.GlanceClient
) -> None:
    """A member's 403 does not switch the shared client to the basic
    list for an admin who asks next.
    """
    rmock.get(
        DETAIL,
        [
            {"status_code": 403, "text": "forbidden"},
            {"text": (DATA / "stores-detail-glance33.json").read_text()},
        ],
    )
    rmock.get(STORES, text=BASIC)
    assert not client.get_store_catalog().detailed
    assert client.get_store_catalog().detailed
    paths = [r.path for r in rmock.request_history]
    assert paths == [
        "/v2/info/stores/detail",
        "/v2/info/stores",
        "/v2/info/stores/detail",
    ]


def test_no_multistore_404_is_not_an_unknown_store(
    rmock: requests_mock.Mocker, client: glance.GlanceClient
) -> None:
    body = "404 Not Found\n\nMulti backend is not supported at this site.\n\n"
    rmock.get(DETAIL, status_code=404, text=body)
    rmock.get(STORES, status_code=404, text=body)
    cat = client.get_store_catalog()
    assert not cat.multistore and cat.stores == ()


def test_other_404_is_a_request_error(
    rmock: requests_mock.Mocker, client: glance.GlanceClient
) -> None:
    rmock.get(DETAIL, status_code=404, text="nope")
    rmock.get(
        STORES, status_code=404, text="<html><h1>404</h1>Not here</html>"
    )
    with pytest.raises(errors.GlanceRequestError) as info:
        client.get_store_catalog()
    assert info.value.status_code == 404
    assert "Not here" in str(info.value)


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (401, errors.GlanceAuthError),
        (500, errors.GlanceUnavailable),
        (502, errors.GlanceUnavailable),
        (503, errors.GlanceUnavailable),
        (418, errors.GlanceRequestError),
    ],
)
def test_status_mapping_keeps_request_id(
    rmock: requests_mock.Mocker,
    client: glance.GlanceClient,
    status: int,
    error: type[errors.GlanceError],
) -> None:
    rmock.get(
        DETAIL,
        status_code=status,
        headers={"x-openstack-request-id": "req-123"},
        json={"message": "It broke<br /><br />\n\n", "code": status},
    )
    with pytest.raises(error) as info:
        client.get_store_catalog()
    exc = info.value
    assert exc.status_code == status
    assert exc.request_id == "req-123"
    assert exc.endpoint == URL
    assert "It broke" in str(exc) and "<br" not in str(exc)
    # the context is for logs and the CLI, not for an API's caller
    assert "req-123" not in str(exc) and URL not in str(exc)
    assert "req-123" in exc.details() and URL in exc.details()
    assert exc.exit_code == 4


def test_forbidden_on_basic_list_is_auth_error(
    rmock: requests_mock.Mocker, client: glance.GlanceClient
) -> None:
    rmock.get(DETAIL, status_code=403)
    rmock.get(STORES, status_code=403)
    with pytest.raises(errors.GlanceAuthError):
        client.get_store_catalog()


@pytest.mark.parametrize(
    ("exc", "cause"),
    [
        (
            requests.exceptions.ConnectionError(
                "Failed to establish a new connection: "
                "[Errno 111] Connection refused"
            ),
            "connection refused",
        ),
        (requests.exceptions.ConnectTimeout("slow"), "timed out"),
        (requests.exceptions.ReadTimeout("slow"), "timed out"),
    ],
)
def test_connection_failures_are_unavailable(
    rmock: requests_mock.Mocker,
    client: glance.GlanceClient,
    exc: Exception,
    cause: str,
) -> None:
    rmock.get(DETAIL, exc=exc)
    with pytest.raises(errors.GlanceUnavailable) as info:
        client.get_store_catalog()
    assert cause in str(info.value)
    assert URL in info.value.details()
    assert isinstance(info.value.__cause__, Exception)


def test_bad_catalog_carries_request_id(
    rmock: requests_mock.Mocker, client: glance.GlanceClient
) -> None:
    rmock.get(
        DETAIL, text="not json", headers={"x-openstack-request-id": "req-9"}
    )
    with pytest.raises(errors.BadStoreCatalog) as info:
        client.get_store_catalog()
    assert info.value.request_id == "req-9"


def test_upload_sends_length_not_chunks(
    rmock: requests_mock.Mocker, client: glance.GlanceClient
) -> None:
    class Body:
        def __iter__(self):  # type: ignore[no-untyped-def]
            yield b"abc"
            yield b"de"

        def __len__(self) -> int:
            return 5

    rmock.put(URL + "/v2/images/i1/file", status_code=204)
    client.upload_image_data("i1", Body(), 5, store_id="cheap", timeout=(5, 5))
    # requests-mock sees the prepared request, not the wire; that is
    # enough here, as requests picks Content-Length over chunked from the
    # body's len() alone (uWSGI refuses chunked uploads)
    req = rmock.last_request
    assert req.headers["Content-Length"] == "5"
    assert "Transfer-Encoding" not in req.headers
    assert req.headers["X-Image-Meta-Store"] == "cheap"
    assert req.headers["x-openstack-image-size"] == "5"
    assert req.headers["Content-Type"] == "application/octet-stream"


def test_upload_without_store_sends_no_store_header(
    rmock: requests_mock.Mocker, client: glance.GlanceClient
) -> None:
    rmock.put(URL + "/v2/images/i1/file", status_code=204)
    client.upload_image_data("i1", b"abc", 3, store_id=None, timeout=(5, 5))
    assert "X-Image-Meta-Store" not in rmock.last_request.headers


@pytest.mark.parametrize(
    ("status", "message", "error"),
    [
        (400, "Store for identifier gone not found", errors.UnknownStore),
        (
            410,
            "Error in store configuration. "
            "Adding images to store is disabled.",
            errors.ReadOnlyStore,
        ),
        (
            409,
            "Image status transition from active to saving is not allowed",
            errors.ImageStateConflict,
        ),
        (413, "The incoming image is too large", errors.QuotaExceeded),
        (415, "Invalid content type None", errors.FormatRejected),
        (503, "store write denied", errors.GlanceUnavailable),
        (401, "expired", errors.GlanceAuthError),
        (400, "Size mismatch", errors.GlanceRequestError),
    ],
)
def test_upload_status_mapping(
    rmock: requests_mock.Mocker,
    client: glance.GlanceClient,
    status: int,
    message: str,
    error: type[errors.VolumeImageError],
) -> None:
    rmock.put(
        URL + "/v2/images/i1/file",
        status_code=status,
        text=json.dumps({"message": message + "<br /><br />\n\n\n"}),
    )
    with pytest.raises(error) as info:
        client.upload_image_data(
            "i1", b"abc", 3, store_id="gone", timeout=(5, 5)
        )
    assert info.value.status_code == status
    assert rmock.call_count == 1  # never retried here


def test_create_get_delete(
    rmock: requests_mock.Mocker, client: glance.GlanceClient
) -> None:
    rmock.post(
        URL + "/v2/images",
        status_code=201,
        json={"id": "i1", "status": "queued"},
    )
    rmock.get(URL + "/v2/images/i1", json={"id": "i1", "status": "queued"})
    rmock.delete(URL + "/v2/images/i1", status_code=204)
    rmock.delete(URL + "/v2/images/i2", status_code=404)
    assert client.create_image({"name": "x"})["id"] == "i1"
    assert json.loads(rmock.request_history[0].text) == {"name": "x"}
    assert client.get_image("i1")["status"] == "queued"
    assert client.delete_image("i1") is True
    assert client.delete_image("i2") is False


def test_keystone_down_is_named_and_asked_once(
    rmock: requests_mock.Mocker,
) -> None:
    """A token failure is Keystone's, and building the error asks no one."""
    from keystoneauth1.identity import v3

    auth_url = "http://keystone.test:5000/v3"
    rmock.post(auth_url + "/auth/tokens", status_code=503, text="down")
    auth = v3.Password(
        auth_url=auth_url, username="u", password="p", project_name="p",
        user_domain_id="default", project_domain_id="default",
    )  # fmt: skip
    client = glance.GlanceClient(
        adapter.Adapter(session.Session(auth=auth), service_type="image")
    )
    with pytest.raises(errors.GlanceError, match="Keystone") as info:
        client.get_store_catalog()
    assert "Glance is unavailable" not in str(info.value)
    tokens = [r for r in rmock.request_history if "auth/tokens" in r.url]
    assert len(tokens) == 1
    # a 5xx is an outage: retry later, not "check the password"
    assert isinstance(info.value, errors.GlanceUnavailable)
    assert "Keystone is unavailable" in str(info.value)
    assert "password" not in str(info.value)
    rmock.post(auth_url + "/auth/tokens", status_code=401, text="no")
    with pytest.raises(errors.GlanceAuthError, match="password"):
        client.get_store_catalog()


def test_deep_json_from_glance_is_a_glance_error(
    rmock: requests_mock.Mocker, client: glance.GlanceClient
) -> None:
    deep = b'{"a": ' * 100000 + b"1" + b"}" * 100000
    rmock.get(URL + "/v2/images/i1", content=deep)
    with pytest.raises(errors.GlanceRequestError, match="not usable JSON"):
        client.get_image("i1")
    rmock.get(URL + "/v2/images/i1", json=[1, 2])
    with pytest.raises(errors.GlanceRequestError, match="not an object"):
        client.get_image("i1")


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("7", 7.0), ("0", 0.0), ("soon", None), (None, None)],
)
def test_a_503_carries_retry_after(
    rmock: requests_mock.Mocker,
    client: glance.GlanceClient,
    header: str | None,
    seconds: float | None,
) -> None:
    headers = {"Retry-After": header} if header is not None else {}
    rmock.get(DETAIL, status_code=503, headers=headers)
    with pytest.raises(errors.GlanceUnavailable) as info:
        client.get_store_catalog()
    assert info.value.retry_after == seconds


def test_retry_after_as_an_http_date() -> None:
    import email.utils
    import time

    resp = requests.Response()
    resp.headers["Retry-After"] = email.utils.formatdate(
        time.time() + 60, usegmt=True
    )
    waited = glance.retry_after(resp)
    assert waited is not None and 55 <= waited <= 60


def test_image_pages_follow_links_on_the_origin_only(
    rmock: requests_mock.Mocker, client: glance.GlanceClient
) -> None:
    """Glance's "next" is followed as a path, or on the endpoint's own
    scheme, host and port; anywhere else it would carry the token.
    """
    first = URL + "/v2/images?limit=200&status=saving"
    rmock.get(first, json={"images": [{"id": "a"}],
                           "next": "/v2/images?marker=a"})  # fmt: skip
    rmock.get(
        URL + "/v2/images?marker=a",
        json={"images": [{"id": "b"}], "next": URL + "/v2/images?m=b"},
    )
    rmock.get(URL + "/v2/images?m=b", json={"images": [{"id": "c"}]})
    assert [i["id"] for i in client.list_images(status="saving")] == [
        "a",
        "b",
        "c",
    ]
    for link in ("http://evil.test/v2/images?marker=a",
                 "https://glance.test:9292/v2/images",
                 "//evil.test/v2/images", "/v2/images?\nx"):  # fmt: skip
        rmock.reset_mock()
        rmock.get(first, json={"images": [], "next": link})
        with pytest.raises(errors.GlanceRequestError, match="not followed"):
            client.list_images(status="saving")
        assert rmock.call_count == 1
