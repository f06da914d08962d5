"""The store_validation WSGI filter, in process, over requests-mock."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import requests_mock
import webob

from volume_image.api import middleware

from .conftest import URL

DATA = Path(__file__).parent.parent / "data"
STORES = json.loads((DATA / "stores-glance33.json").read_text())
KEY = "image_service:store_id"


class App:
    """The next WSGI app: records what reached it, reading the body with
    webob as Cinder does (so also a body without Content-Length, when the
    server sets ``wsgi.input_terminated``), not the way the filter does.
    """

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.calls = 0

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        self.calls += 1
        # body_file: what webob decides is readable (Content-Length, or
        # wsgi.input_terminated), without spooling it to a temporary file
        self.bodies.append(webob.Request(environ).body_file.read())
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"cinder"]


def call(
    app: Any,
    method: str,
    path: str,
    body: Any = None,
    *,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    data = (
        raw
        if raw is not None
        else (b"" if body is None else json.dumps(body).encode())
    )
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "/v3",
        "PATH_INFO": path,
        "CONTENT_LENGTH": str(len(data)) if data else "",
        "wsgi.input": io.BytesIO(data),
    }
    for name, value in (headers or {}).items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    status: list[str] = []

    def start_response(s: str, h: Any, exc_info: Any = None) -> None:
        status.append(s)

    out = b"".join(app(environ, start_response))
    return int(status[0].split()[0]), out


@pytest.fixture
def stores_mock(rmock: requests_mock.Mocker) -> requests_mock.Mocker:
    rmock.get(URL + "/v2/info/stores/detail", status_code=403)
    rmock.get(URL + "/v2/info/stores", json=STORES)
    return rmock


def make(**options: str) -> tuple[middleware.StoreValidationFilter, App]:
    options.setdefault("glance_endpoint", URL)
    app = App()
    return middleware.filter_factory({}, **options)(app), app


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        (
            "POST",
            "/p1/types",
            {"volume_type": {"name": "a", "extra_specs": {KEY: "web"}}},
        ),
        (
            "POST",
            "/types",
            {"volume_type": {"name": "a", "extra_specs": {KEY: "web"}}},
        ),
        (
            "PUT",
            "/p1/types/t1",
            {"volume_type": {"extra_specs": {KEY: "web"}}},
        ),
        ("POST", "/p1/types/t1/extra_specs", {"extra_specs": {KEY: "web"}}),
        ("POST", "/types/t1/extra_specs/", {"extra_specs": {KEY: "web"}}),
        (
            "POST",
            "/p1/types/t1/extra_specs.json",
            {"extra_specs": {KEY: "web"}},
        ),
        (
            "PUT",
            "/p1/types/t1/extra_specs/image_service:store_id",
            {KEY: "web"},
        ),
        (
            "PUT",
            "/types/t1/extra_specs/image_service%3Astore_id",
            {KEY: "web"},
        ),
        (
            "PUT",
            "/v3/p1/types/t1/extra_specs/image_service:store_id",
            {KEY: "web"},
        ),
    ],
)
def test_every_write_route_is_checked(
    stores_mock: requests_mock.Mocker, method: str, path: str, body: Any
) -> None:
    filt, app = make()
    status, out = call(filt, method, path, body)
    assert status == 400
    fault = json.loads(out)["badRequest"]
    assert fault["code"] == 400
    assert "read-only" in fault["message"]
    assert app.calls == 0


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/p1/types/t1/extra_specs"),
        ("DELETE", "/p1/types/t1/extra_specs/image_service:store_id"),
        ("PUT", "/p1/types"),
        ("POST", "/p1/types/t1"),
        ("PUT", "/p1/types/t1/extra_specs"),
        ("POST", "/p1/types/t1/extra_specs/k"),
        ("POST", "/p1/types/t1/action"),
        ("POST", "/p1/volumes"),
        ("POST", "/p1/qos-specs"),
    ],
)
def test_other_requests_pass_untouched(
    rmock: requests_mock.Mocker, method: str, path: str
) -> None:
    filt, app = make()
    raw = json.dumps({"extra_specs": {KEY: "web"}, KEY: "web"}).encode()
    status, out = call(filt, method, path, raw=raw)
    assert (status, out) == (200, b"cinder")
    assert app.bodies == [raw]
    assert rmock.call_count == 0


def test_good_body_passes_byte_for_byte(
    stores_mock: requests_mock.Mocker,
) -> None:
    filt, app = make()
    raw = b'{ "extra_specs" :{"image_service:store_id":"cheap","n":"\\u00e9"}}'
    status, _ = call(filt, "POST", "/p1/types/t1/extra_specs", raw=raw)
    assert status == 200
    assert app.bodies == [raw]


@pytest.mark.parametrize(
    "raw",
    [
        b"{not json",
        b"\xff\xfe",
        b"[1, 2]",
        b'{"extra_specs": "x"}',
        b"null",
        # nested past Python's recursion limit, well under MAX_BODY
        b'{"extra_specs": ' + b"[" * 50000 + b"]" * 50000 + b"}",
    ],
)
def test_malformed_bodies_are_left_to_cinder(
    rmock: requests_mock.Mocker, raw: bytes
) -> None:
    filt, app = make()
    status, _ = call(filt, "POST", "/p1/types/t1/extra_specs", raw=raw)
    assert status == 200
    assert app.bodies == [raw]
    assert rmock.call_count == 0


def test_no_body_is_left_to_cinder(rmock: requests_mock.Mocker) -> None:
    filt, app = make()
    status, _ = call(filt, "POST", "/p1/types/t1/extra_specs")
    assert status == 200
    assert app.calls == 1


def test_oversized_body_is_refused(rmock: requests_mock.Mocker) -> None:
    filt, app = make()
    raw = b" " * (middleware.MAX_BODY + 1)
    status, out = call(filt, "POST", "/p1/types/t1/extra_specs", raw=raw)
    assert status == 413
    assert json.loads(out)["overLimit"]["code"] == 413
    assert app.calls == 0


def test_specs_without_the_namespace_never_ask_glance(
    rmock: requests_mock.Mocker,
) -> None:
    filt, app = make()
    body = {"extra_specs": {"volume_backend_name": "lvm"}}
    status, _ = call(filt, "POST", "/p1/types/t1/extra_specs", body)
    assert status == 200
    assert app.calls == 1
    assert rmock.call_count == 0


def test_glance_down_is_503_fail_closed(rmock: requests_mock.Mocker) -> None:
    rmock.get(URL + "/v2/info/stores/detail", status_code=503)
    filt, app = make()
    body = {"extra_specs": {KEY: "cheap"}}
    status, out = call(filt, "POST", "/p1/types/t1/extra_specs", body)
    assert status == 503
    fault = json.loads(out)["serviceUnavailable"]
    assert "Nothing was stored" in fault["message"]
    assert URL not in fault["message"]  # no internal endpoint to callers
    assert app.calls == 0


def test_fail_open_lets_the_write_through_with_a_warning(
    rmock: requests_mock.Mocker, caplog: pytest.LogCaptureFixture
) -> None:
    rmock.get(URL + "/v2/info/stores/detail", status_code=503)
    filt, app = make(fail_open="true")
    body = {"extra_specs": {KEY: "cheap"}}
    status, _ = call(filt, "POST", "/p1/types/t1/extra_specs", body)
    assert status == 200
    assert app.calls == 1
    assert "stored unchecked" in caplog.text
    # local rules still hold with Glance down
    body = {"extra_specs": {KEY: "os_glance_tasks_store"}}
    status, _ = call(filt, "POST", "/p1/types/t1/extra_specs", body)
    assert status == 400


def test_single_store_glance_is_400(rmock: requests_mock.Mocker) -> None:
    for path in ("/v2/info/stores/detail", "/v2/info/stores"):
        rmock.get(
            URL + path,
            status_code=404,
            text="<html>404 Not Found: Multi backend is not supported</html>",
        )
    filt, _ = make()
    body = {"extra_specs": {KEY: "fast"}}
    status, out = call(filt, "POST", "/p1/types/t1/extra_specs", body)
    assert status == 400
    assert "multi-store" in json.loads(out)["badRequest"]["message"]


def test_catalog_is_cached(stores_mock: requests_mock.Mocker) -> None:
    filt, _ = make()
    body = {"extra_specs": {KEY: "cheap"}}
    for _ in range(5):
        assert call(filt, "POST", "/p1/types/t1/extra_specs", body)[0] == 200
    assert stores_mock.call_count == 2  # detail (403) + the list, once


def test_forward_token(rmock: requests_mock.Mocker) -> None:
    rmock.get(URL + "/v2/info/stores/detail", status_code=403)
    rmock.get(URL + "/v2/info/stores", json=STORES)
    filt, _ = make(forward_token="yes", store_cache_ttl="0")
    body = {"extra_specs": {KEY: "cheap"}}
    headers = {"X-Auth-Token": "caller-token"}
    status, _ = call(
        filt, "POST", "/p1/types/t1/extra_specs", body, headers=headers
    )
    assert status == 200
    assert rmock.last_request is not None
    assert rmock.last_request.headers["X-Auth-Token"] == "caller-token"


def test_forward_token_finds_glance_in_the_callers_catalog(
    rmock: requests_mock.Mocker,
) -> None:
    other = "http://glance.internal:9292"
    rmock.get(other + "/v2/info/stores/detail", status_code=403)
    rmock.get(other + "/v2/info/stores", json=STORES)
    app = App()
    filt = middleware.filter_factory(
        {}, forward_token="true", store_cache_ttl="0"
    )(app)
    # keystonemiddleware's X-Service-Catalog is in the v2 format
    catalog = [
        {
            "type": "image",
            "name": "glance",
            "endpoints": [
                {
                    "region": "RegionOne",
                    "publicURL": other,
                    "internalURL": other,
                }
            ],
        }
    ]
    headers = {
        "X-Auth-Token": "caller-token",
        "X-Service-Catalog": json.dumps(catalog),
    }
    body = {"extra_specs": {KEY: "web"}}
    status, out = call(
        filt, "POST", "/p1/types/t1/extra_specs", body, headers=headers
    )
    assert status == 400
    assert "read-only" in out.decode()
    assert rmock.last_request is not None
    assert rmock.last_request.headers["X-Auth-Token"] == "caller-token"
    # no catalog and no endpoint: Glance cannot be asked, fail closed
    status, out = call(
        filt,
        "POST",
        "/p1/types/t1/extra_specs",
        body,
        headers={"X-Auth-Token": "caller-token"},
    )
    assert status == 503
    assert app.calls == 0


def test_unknown_paste_option_fails_at_load() -> None:
    with pytest.raises(ValueError, match="fail_opn"):
        middleware.filter_factory({}, glance_endpoint=URL, fail_opn="true")


def test_config_file(
    tmp_path: Path, stores_mock: requests_mock.Mocker
) -> None:
    conf = tmp_path / "volume_image.conf"
    conf.write_text(
        f"[glance]\nendpoint_override = {URL}\n"
        "[volume_image]\nstore_cache_ttl = 0\n"
    )
    app = App()
    filt = middleware.filter_factory({}, config_file=str(conf))(app)
    body = {"extra_specs": {KEY: "cheap"}}
    for _ in range(2):
        assert call(filt, "POST", "/p1/types/t1/extra_specs", body)[0] == 200
    # ttl 0: each check asks again, detail (403 here) then the basic list
    assert stores_mock.call_count == 4


def test_answers_never_name_glances_endpoint(
    rmock: requests_mock.Mocker,
) -> None:
    rmock.get(
        URL + "/v2/info/stores/detail",
        status_code=503,
        headers={"x-openstack-request-id": "req-1"},
    )
    filt, _ = make()
    body = {"extra_specs": {KEY: "fast"}}
    status, out = call(filt, "POST", "/p1/types/t1/extra_specs", body)
    assert status == 503
    message = json.loads(out)["serviceUnavailable"]["message"]
    assert URL not in message
    assert "Glance request id req-1" in message


def _no_length(body: bytes, terminated: bool) -> dict[str, Any]:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "POST",
        "SCRIPT_NAME": "/v3",
        "PATH_INFO": "/p1/types/t1/extra_specs",
        "wsgi.input": io.BytesIO(body),
    }
    if terminated:
        environ["wsgi.input_terminated"] = True
    return environ


def test_a_body_without_length_is_checked_when_the_app_can_read_it(
    stores_mock: requests_mock.Mocker,
) -> None:
    """gunicorn and mod_wsgi (chunked) end the input, and webob then
    reads a body that has no Content-Length: so does the filter.
    """
    filt, app = make()
    bad = json.dumps({"extra_specs": {KEY: "web"}}).encode()
    status: list[str] = []

    def start(s: str, h: Any, exc_info: Any = None) -> None:
        status.append(s)

    b"".join(filt(_no_length(bad, terminated=True), start))
    assert status[0].startswith("400") and app.calls == 0
    good = json.dumps({"extra_specs": {KEY: "cheap"}}).encode()
    b"".join(filt(_no_length(good, terminated=True), start))
    assert status[1].startswith("200") and app.bodies == [good]
    # the input is not ended: neither webob nor the filter can read it
    b"".join(filt(_no_length(bad, terminated=False), start))
    assert status[2].startswith("200") and app.bodies[-1] == b""
    huge = b" " * (middleware.MAX_BODY + 5)
    b"".join(filt(_no_length(huge, terminated=True), start))
    assert status[3].startswith("413")


def answer(
    app: Any, environ_extra: dict[str, Any], headers: dict[str, str]
) -> tuple[str, dict[str, str], bytes]:
    data = json.dumps({"extra_specs": {KEY: "web"}}).encode()
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "POST",
        "SCRIPT_NAME": "/v3",
        "PATH_INFO": "/p1/types/t1/extra_specs",
        "CONTENT_LENGTH": str(len(data)),
        "wsgi.input": io.BytesIO(data),
        **environ_extra,
    }
    for name, value in headers.items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    got: list[Any] = []

    def start_response(s: str, h: Any, exc_info: Any = None) -> None:
        got.extend([s, dict(h)])

    body = b"".join(app(environ, start_response))
    return got[0], got[1], body


class Context:
    request_id = "req-11111111-2222-3333-4444-555555555555"


@pytest.mark.parametrize(
    ("asked", "answered"),
    [
        (None, "volume 3.0"),
        ("volume 3.59", "volume 3.59"),
        ("compute 2.1, volume 3.44", "volume 3.44"),
        ("volume latest", None),  # the maximum is Cinder's to know
    ],
)
def test_a_refusal_carries_cinders_headers(
    stores_mock: requests_mock.Mocker,
    caplog: pytest.LogCaptureFixture,
    asked: str | None,
    answered: str | None,
) -> None:
    filt, app = make()
    caplog.set_level("INFO", logger=middleware.__name__)
    status, headers, body = answer(
        filt,
        {
            "openstack.request_id": Context.request_id,
            "cinder.context": Context(),
        },
        {"OpenStack-API-Version": asked} if asked else {},
    )
    assert status == "400 Bad Request"
    assert app.calls == 0
    assert json.loads(body)["badRequest"]["code"] == 400
    assert headers["x-openstack-request-id"] == Context.request_id
    assert headers["x-compute-request-id"] == Context.request_id
    if answered is None:
        assert "OpenStack-API-Version" not in headers
    else:
        assert headers["OpenStack-API-Version"] == answered
        assert headers["Vary"] == "OpenStack-API-Version"
    # the log line names the request the caller's Request-ID names
    assert f"(request {Context.request_id})" in caplog.text


def test_without_a_request_id_no_id_headers(
    stores_mock: requests_mock.Mocker,
) -> None:
    filt, _ = make()
    status, headers, _ = answer(filt, {}, {})
    assert status.startswith("400")
    assert "x-openstack-request-id" not in headers
    assert "x-compute-request-id" not in headers


@pytest.mark.parametrize(
    ("flags", "checked"),
    [
        ({"webob.is_body_readable": True}, True),
        # the server's flag wins over webob's, as in webob
        ({"wsgi.input_terminated": False, "webob.is_body_readable": True},
         False),
        ({"CONTENT_LENGTH": "0", "wsgi.input_terminated": True}, False),
        ({"CONTENT_LENGTH": "junk", "webob.is_body_readable": True}, True),
    ],
)  # fmt: skip
def test_the_body_is_read_when_webob_reads_it(
    stores_mock: requests_mock.Mocker, flags: dict[str, Any], checked: bool
) -> None:
    """Whatever webob's Request.is_body_readable says Cinder reads, the
    filter checks: a body is never let through unread and then read.
    """
    filt, app = make()
    bad = json.dumps({"extra_specs": {KEY: "web"}}).encode()
    environ = {**_no_length(bad, terminated=False), **flags}
    readable = webob.Request(dict(environ)).is_body_readable
    assert bool(readable) is checked
    status: list[str] = []

    def start(s: str, h: Any, exc_info: Any = None) -> None:
        status.append(s)

    b"".join(filt(environ, start))
    if checked:
        assert status[0].startswith("400") and app.calls == 0
    else:
        assert status[0].startswith("200") and app.bodies == [b""]
