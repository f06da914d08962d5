"""Upload retry, re-authentication and cleanup rules at the HTTP edge."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import pytest
import requests
import requests_mock
from keystoneauth1 import adapter, plugin, session

from volume_image import config, errors
from volume_image.clients import glance
from volume_image.pipeline import (
    convert,
    glance_ops,
    retry,
    send,
    slots,
)
from volume_image.pipeline import stream as _stream
from volume_image.pipeline import uploader as upload

from .conftest import URL

DATA = bytes(range(256)) * 4096  # 1 MiB
IMG = URL + "/v2/images/i1"
STORES = {"stores": [{"id": "fast", "default": "true"}, {"id": "cheap"}]}


def active(data: bytes = DATA, store: str = "cheap") -> dict[str, object]:
    return {
        "id": "i1",
        "status": "active",
        "size": len(data),
        "checksum": hashlib.md5(data).hexdigest(),  # noqa: S324
        "os_hash_algo": "sha512",
        "os_hash_value": hashlib.sha512(data).hexdigest(),
        "stores": store,
    }


@pytest.fixture
def glance_mock(rmock: requests_mock.Mocker) -> requests_mock.Mocker:
    rmock.get(URL + "/v2/info/stores/detail", json=STORES)
    rmock.post(URL + "/v2/images", status_code=201, json={"id": "i1"})
    rmock.delete(IMG, status_code=204)
    return rmock


@pytest.fixture
def vol(tmp_path: Path) -> Path:
    path = tmp_path / "v"
    path.write_bytes(DATA)
    return path


def make(client: glance.GlanceClient, **kw: object) -> upload.Uploader:
    settings = config.Settings(
        upload_retry_delay=0, chunk_size=64 * 1024, **kw
    )  # type: ignore[arg-type]
    return upload.Uploader(client, settings)


def put_bodies(rmock: requests_mock.Mocker) -> list[bytes]:
    return [
        b"".join(r.body) if not isinstance(r.body, bytes) else r.body
        for r in rmock.request_history
        if r.method == "PUT"
    ]


class Recorder:
    """A PUT callback that drains the streamed body, then answers."""

    def __init__(self, *answers: object) -> None:
        self.answers = list(answers)
        self.bodies: list[bytes] = []

    def __call__(self, request, context):  # type: ignore[no-untyped-def]
        self.bodies.append(b"".join(request.body))
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, tuple):  # (status, Glance's message)
            context.status_code = answer[0]
            return json.dumps({"message": answer[1]})
        context.status_code = answer
        return ""


def test_retry_resends_from_byte_zero(
    glance_mock: requests_mock.Mocker,
    client: glance.GlanceClient,
    vol: Path,
) -> None:
    rec = Recorder(503, requests.exceptions.ConnectionError("reset"), 204)
    glance_mock.put(IMG + "/file", text=rec)
    glance_mock.get(
        IMG,
        [
            {"json": {"status": "saving"}},
            {"json": {"status": "queued"}},
            {"json": {"status": "queued"}},
            {"json": active()},
        ],
    )
    result = make(client).upload(vol, upload.ImageMeta("x"), store_id="cheap")
    assert result.attempts == 3
    assert rec.bodies == [DATA, DATA, DATA]  # whole, every time


@pytest.mark.parametrize(
    ("status", "error"),
    [
        # (a 400 naming the store is retried while the store list names
        # it: the Glance nodes disagree; see below)
        (400, errors.GlanceRequestError),
        (409, errors.ImageStateConflict),
        (410, errors.ReadOnlyStore),
        (413, errors.QuotaExceeded),
        (415, errors.FormatRejected),
        (500, errors.GlanceUnavailable),
    ],
)
def test_never_retried(
    glance_mock: requests_mock.Mocker,
    client: glance.GlanceClient,
    vol: Path,
    status: int,
    error: type[errors.VolumeImageError],
) -> None:
    # Glance 33's own messages, where the class depends on them
    message = {410: "Store cheap is read-only"}.get(status, "no")
    rec = Recorder((status, message))
    glance_mock.put(IMG + "/file", text=rec)
    glance_mock.get(IMG, json={"status": "queued"})
    with pytest.raises(error):
        make(client).upload(vol, upload.ImageMeta("x"), store_id="cheap")
    assert len(rec.bodies) == 1
    assert glance_mock.request_history[-1].method == "DELETE"


class CountingToken(plugin.BaseAuthPlugin):
    """A token plugin that counts how often it is made to forget its
    token, and sends a new token after each time.
    """

    def __init__(self) -> None:
        self.invalidated = 0

    def get_token(self, session, **kwargs):  # type: ignore[no-untyped-def]
        return f"token-{self.invalidated}"

    def invalidate(self) -> bool:
        self.invalidated += 1
        return True


def test_401_reauthenticates_once(
    glance_mock: requests_mock.Mocker, vol: Path
) -> None:
    auth = CountingToken()
    client = glance.GlanceClient(
        adapter.Adapter(
            session.Session(auth=auth, timeout=5), endpoint_override=URL
        )
    )
    rec = Recorder(401, 204)
    glance_mock.put(IMG + "/file", text=rec)
    glance_mock.get(IMG, [{"json": {"status": "queued"}}, {"json": active()}])
    result = make(client).upload(vol, upload.ImageMeta("x"), store_id="cheap")
    assert result.attempts == 2 and rec.bodies == [DATA, DATA]
    # the token was dropped once, and the second PUT carried a new one
    assert auth.invalidated == 1
    puts = [r for r in glance_mock.request_history if r.method == "PUT"]
    assert [r.headers["X-Auth-Token"] for r in puts] == ["token-0", "token-1"]
    rec2 = Recorder(401, 401)
    glance_mock.put(IMG + "/file", text=rec2)
    glance_mock.get(IMG, json={"status": "queued"})
    with pytest.raises(errors.GlanceAuthError):
        make(client).upload(vol, upload.ImageMeta("x"), store_id="cheap")
    assert len(rec2.bodies) == 2 and auth.invalidated == 2


def test_unseekable_source_is_not_retried(
    glance_mock: requests_mock.Mocker, client: glance.GlanceClient
) -> None:
    class Pipe(io.RawIOBase):
        def __init__(self) -> None:
            self.buf = io.BytesIO(DATA)

        def readable(self) -> bool:
            return True

        def read(self, n: int = -1) -> bytes:
            return self.buf.read(n)

    rec = Recorder(503, 204)
    glance_mock.put(IMG + "/file", text=rec)
    glance_mock.get(IMG, json={"status": "queued"})
    with pytest.raises(errors.GlanceUnavailable):
        make(client).upload(
            upload.Source(fileobj=Pipe(), size=len(DATA)),  # type: ignore[arg-type]
            upload.ImageMeta("x"),
        )
    assert len(rec.bodies) == 1


def test_retries_are_bounded(
    glance_mock: requests_mock.Mocker,
    client: glance.GlanceClient,
    vol: Path,
) -> None:
    rec = Recorder(*([503] * 10))
    glance_mock.put(IMG + "/file", text=rec)
    glance_mock.get(IMG, json={"status": "queued"})
    with pytest.raises(errors.GlanceUnavailable):
        make(client, upload_retries=2).upload(vol, upload.ImageMeta("x"))
    assert len(rec.bodies) == 3


def test_caller_image_is_deleted_only_while_queued(
    glance_mock: requests_mock.Mocker,
    client: glance.GlanceClient,
    vol: Path,
) -> None:
    glance_mock.put(IMG + "/file", text=Recorder(415))
    glance_mock.get(
        IMG, [{"json": {"status": "queued"}}, {"json": {"status": "queued"}}]
    )
    with pytest.raises(errors.FormatRejected):
        make(client).upload(vol, upload.ImageMeta("x"), image_id="i1")
    assert glance_mock.request_history[-1].method == "DELETE"
    # someone else's data arrived meanwhile: hands off
    glance_mock.reset_mock()
    glance_mock.put(IMG + "/file", text=Recorder(409))
    glance_mock.get(
        IMG, [{"json": {"status": "queued"}}, {"json": {"status": "active"}}]
    )
    with pytest.raises(errors.ImageStateConflict):
        make(client).upload(vol, upload.ImageMeta("x"), image_id="i1")
    assert "DELETE" not in [r.method for r in glance_mock.request_history]


def test_short_source_is_an_error(
    glance_mock: requests_mock.Mocker, client: glance.GlanceClient
) -> None:
    rec = Recorder(204)
    glance_mock.put(IMG + "/file", text=rec)
    with pytest.raises(errors.SourceError, match="ended at byte"):
        make(client).upload(
            upload.Source(fileobj=io.BytesIO(DATA[:100]), size=len(DATA)),
            upload.ImageMeta("x"),
        )


def test_wrong_store_or_hash_is_an_integrity_error(
    glance_mock: requests_mock.Mocker,
    client: glance.GlanceClient,
    vol: Path,
) -> None:
    glance_mock.put(IMG + "/file", status_code=204)
    glance_mock.get(IMG, json=active(store="fast"))
    with pytest.raises(errors.IntegrityError, match="not 'cheap'"):
        make(client).upload(vol, upload.ImageMeta("x"), store_id="cheap")
    bad = active()
    bad["os_hash_value"] = "0" * 128
    glance_mock.get(IMG, json=bad)
    with pytest.raises(errors.IntegrityError, match="os_hash_value"):
        make(client).upload(vol, upload.ImageMeta("x"), store_id="cheap")


def test_cancel_before_send(
    glance_mock: requests_mock.Mocker,
    client: glance.GlanceClient,
    vol: Path,
) -> None:
    glance_mock.put(IMG + "/file", text=Recorder(204))
    glance_mock.get(IMG, json={"status": "queued"})
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(errors.UploadCancelled):
        make(client).upload(vol, upload.ImageMeta("x"), cancel=cancel)
    assert glance_mock.request_history[-1].method == "DELETE"


def test_stale_work_directories_are_swept(tmp_path: Path) -> None:
    # a process that has exited: its directory is stale
    child = subprocess.Popen(["true"])
    child.wait()
    stale = tmp_path / f"volume_image-{child.pid}-abc"
    stale.mkdir()
    (stale / "volume.qcow2").write_bytes(b"x")
    mine = convert.make_workdir(str(tmp_path))
    other = tmp_path / "volume_image-notapid"
    other.mkdir()
    uploader = upload.Uploader(
        mock.Mock(), config.Settings(conversion_dir=str(tmp_path))
    )
    # a constructor deletes nothing
    assert len(list(tmp_path.iterdir())) == 3
    assert uploader.remove_stale_workdirs() == [stale]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [mine.name, other.name]
    )


def test_base_image_ref_is_sent(
    glance_mock: requests_mock.Mocker,
    client: glance.GlanceClient,
    vol: Path,
) -> None:
    glance_mock.put(IMG + "/file", text=Recorder(204, 204))
    glance_mock.get(IMG, json=active(store="fast"))
    make(client).upload(vol, upload.ImageMeta("x"), base_image_ref="b-1")
    put = next(r for r in glance_mock.request_history if r.method == "PUT")
    assert put.headers["x-openstack-base-image-ref"] == "b-1"
    make(client).upload(vol, upload.ImageMeta("x"))
    put = [r for r in glance_mock.request_history if r.method == "PUT"][-1]
    assert "x-openstack-base-image-ref" not in put.headers


@pytest.fixture(autouse=True)
def _forget_learnt_algorithms() -> Iterator[None]:
    yield
    glance_ops._GLANCE_ALGO.clear()


def test_one_digest_streamed_and_none_without_verification(
    glance_mock: requests_mock.Mocker,
    client: glance.GlanceClient,
    vol: Path,
) -> None:
    glance_mock.put(IMG + "/file", text=Recorder(204, 204))
    glance_mock.get(IMG, json=active(store="fast"))
    with mock.patch.object(_stream, "new_hash", wraps=_stream.new_hash) as h:
        result = make(client).upload(vol, upload.ImageMeta("x"))
    assert [c.args for c in h.call_args_list] == [("sha512",)]
    assert result.verified
    assert result.os_hash_value == hashlib.sha512(DATA).hexdigest()
    assert result.checksum == active()["checksum"]
    with mock.patch.object(_stream, "new_hash") as h:
        result = make(client, verify_upload=False).upload(
            vol, upload.ImageMeta("x")
        )
    h.assert_not_called()
    assert not result.verified and result.os_hash_value == ""


@pytest.mark.parametrize("glance_algo", ["sha256", None])
def test_another_glance_algorithm_is_verified_and_learnt(
    glance_mock: requests_mock.Mocker,
    client: glance.GlanceClient,
    vol: Path,
    glance_algo: str | None,
) -> None:
    record = active(store="fast")
    if glance_algo is None:  # an image with only the md5 checksum
        record.pop("os_hash_algo")
        record.pop("os_hash_value")
    else:
        record["os_hash_algo"] = glance_algo
        record["os_hash_value"] = hashlib.new(glance_algo, DATA).hexdigest()
    glance_mock.put(IMG + "/file", text=Recorder(204, 204, 204))
    glance_mock.get(IMG, json=record)
    with mock.patch.object(_stream, "new_hash", wraps=_stream.new_hash) as h:
        assert make(client).upload(vol, upload.ImageMeta("x")).verified
        # the second pass over the source used Glance's algorithm
        learnt = glance_algo or "md5"
        assert [c.args for c in h.call_args_list] == [("sha512",), (learnt,)]
        h.reset_mock()
        # learnt: the next upload streams Glance's algorithm at once
        assert make(client).upload(vol, upload.ImageMeta("x")).verified
        assert [c.args for c in h.call_args_list] == [(learnt,)]
    # and a mismatch in that digest is still caught
    field = "checksum" if glance_algo is None else "os_hash_value"
    record[field] = "0" * len(str(record[field]))
    glance_mock.get(IMG, json=record)
    with pytest.raises(errors.IntegrityError, match=field):
        make(client).upload(vol, upload.ImageMeta("x"))


@pytest.fixture
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    """No real waiting between tries."""
    monkeypatch.setattr(send, "_QUEUED_WAIT", 0.2)
    monkeypatch.setattr(retry, "_IDEMPOTENT_DELAYS", (0, 0, None))
    monkeypatch.setattr(retry, "pause", lambda *a: None)


def test_our_stuck_image_is_replaced_by_a_new_one(
    glance_mock: requests_mock.Mocker,
    client: glance.GlanceClient,
    vol: Path,
    quick: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    created = iter([{"id": "i1"}, {"id": "i2"}])
    glance_mock.post(
        URL + "/v2/images", status_code=201, json=lambda r, c: next(created)
    )
    glance_mock.put(IMG + "/file", text=Recorder(503))
    # its node died: i1 stays 'saving'
    glance_mock.get(IMG, json={"status": "saving"})
    glance_mock.put(URL + "/v2/images/i2/file", text=Recorder(204))
    good = active(store="fast")
    glance_mock.get(URL + "/v2/images/i2", json={**good, "id": "i2"})
    glance_mock.delete(URL + "/v2/images/i2", status_code=204)
    result = make(client).upload(vol, upload.ImageMeta("x"))
    assert (result.image_id, result.images, result.attempts) == ("i2", 2, 2)
    assert result.verified
    deleted = [
        r.url for r in glance_mock.request_history if r.method == "DELETE"
    ]
    assert deleted == [IMG]
    posts = [
        r.json() for r in glance_mock.request_history if r.method == "POST"
    ]
    assert all(p["volume_image_host"] and p["volume_image_pid"] for p in posts)
    assert "uploading into new image i2" in caplog.text


def test_a_callers_stuck_image_fails_without_promising_a_retry(
    glance_mock: requests_mock.Mocker,
    client: glance.GlanceClient,
    vol: Path,
    quick: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    glance_mock.put(IMG + "/file", text=Recorder(503))
    glance_mock.get(
        IMG, [{"json": {"status": "queued"}}, {"json": {"status": "saving"}}]
    )
    with pytest.raises(errors.ImageStateConflict, match=r"'saving'"):
        make(client).upload(vol, image_id="i1")
    assert "attempt 2" not in caplog.text
    assert not [r for r in glance_mock.request_history if r.method == "POST"]


@pytest.mark.parametrize("delete_status", [204, 503])
def test_a_bad_image_is_said_deleted_only_once_it_is(
    glance_mock: requests_mock.Mocker,
    client: glance.GlanceClient,
    vol: Path,
    quick: None,
    delete_status: int,
) -> None:
    glance_mock.put(IMG + "/file", text=Recorder(204))
    glance_mock.get(IMG, json={**active(), "size": 1})
    glance_mock.delete(IMG, status_code=delete_status, text="busy")
    with pytest.raises(errors.IntegrityError, match="size is 1") as info:
        make(client).upload(vol, upload.ImageMeta("x"), store_id="cheap")
    deleted = delete_status == 204
    assert ("It has been deleted." in str(info.value)) is deleted
    assert ("could not be deleted" in str(info.value)) is not deleted


def test_unverifiable_upload_is_kept(
    glance_mock: requests_mock.Mocker,
    client: glance.GlanceClient,
    vol: Path,
    quick: None,
) -> None:
    glance_mock.put(IMG + "/file", text=Recorder(204))
    glance_mock.get(IMG, status_code=503, text="busy")
    result = make(client).upload(vol, upload.ImageMeta("x"))
    assert not result.verified
    assert result.unverified_reason and "kept unverified" in (
        result.unverified_reason
    )
    assert "DELETE" not in [r.method for r in glance_mock.request_history]


def test_a_store_another_node_lists_is_tried_again(
    glance_mock: requests_mock.Mocker,
    client: glance.GlanceClient,
    vol: Path,
    quick: None,
) -> None:
    answers = Recorder(400, 204)

    def put(request, context):  # type: ignore[no-untyped-def]
        text = answers(request, context)
        if context.status_code == 400:
            return '{"message": "Store for identifier cheap not found"}'
        return text

    glance_mock.put(IMG + "/file", text=put)
    glance_mock.get(IMG, [{"json": {"status": "queued"}}, {"json": active()}])
    result = make(client).upload(vol, upload.ImageMeta("x"), store_id="cheap")
    assert result.verified and result.attempts == 2


def test_a_store_no_node_lists_is_refused_with_the_valid_ones(
    glance_mock: requests_mock.Mocker,
    client: glance.GlanceClient,
    vol: Path,
    quick: None,
) -> None:
    up = make(client)
    up.cache.get()  # cheap was there when the type was set
    glance_mock.get(
        URL + "/v2/info/stores/detail",
        json={"stores": [{"id": "fast", "default": "true"}]},
    )
    glance_mock.put(
        IMG + "/file",
        status_code=400,
        json={"message": "Store for identifier cheap not found"},
    )
    glance_mock.get(IMG, json={"status": "queued"})
    with pytest.raises(errors.UnknownStore) as info:
        up.upload(vol, upload.ImageMeta("x"), store_id="cheap")
    assert "Writable stores now: fast" in str(info.value)
    assert "disagree" not in str(info.value)


def test_a_brief_outage_of_the_store_list_is_ridden_out(
    glance_mock: requests_mock.Mocker,
    client: glance.GlanceClient,
    vol: Path,
    quick: None,
) -> None:
    glance_mock.get(
        URL + "/v2/info/stores/detail",
        [{"status_code": 503, "text": "busy"}, {"json": STORES}],
    )
    glance_mock.put(IMG + "/file", text=Recorder(204))
    glance_mock.get(IMG, json=active())
    result = make(client).upload(vol, upload.ImageMeta("x"), store_id="cheap")
    assert result.verified and result.store == "cheap"


def test_a_hung_glance_is_not_asked_again_and_again(
    glance_mock: requests_mock.Mocker,
    client: glance.GlanceClient,
    vol: Path,
    quick: None,
) -> None:
    glance_mock.get(
        URL + "/v2/info/stores/detail", exc=requests.exceptions.ReadTimeout
    )
    with pytest.raises(errors.GlanceUnavailable, match="timed out") as info:
        make(client).upload(vol, upload.ImageMeta("x"), store_id="cheap")
    assert info.value.timed_out
    asked = [r for r in glance_mock.request_history if "stores" in r.url]
    assert len(asked) == 1


def test_one_cap_on_concurrent_uploads_per_process() -> None:
    """Two uploaders (two backends of one cinder-volume) share the cap."""
    upload.Uploader(mock.Mock(), config.Settings(max_concurrent_uploads=2))
    upload.Uploader(mock.Mock(), config.Settings(max_concurrent_uploads=1))
    entered = threading.Event()

    def second() -> None:
        with slots.SLOTS.held():
            entered.set()

    try:
        with slots.SLOTS.held():
            waiter = threading.Thread(target=second)
            waiter.start()
            # one slot in the process, whichever uploader holds it
            assert not entered.wait(0.3)
        assert entered.wait(5)
        waiter.join()
    finally:
        upload.Uploader(mock.Mock(), config.Settings())


def test_a_retry_waits_as_long_as_glance_asks(
    glance_mock: requests_mock.Mocker,
    client: glance.GlanceClient,
    vol: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    waits: list[float] = []
    monkeypatch.setattr(retry, "pause", lambda s, c: waits.append(s))

    def busy_then_ok(request, context):  # type: ignore[no-untyped-def]
        b"".join(request.body)
        if not waits:
            context.status_code = 503
            context.headers["Retry-After"] = "3"
            return ""
        context.status_code = 204
        return ""

    glance_mock.put(IMG + "/file", text=busy_then_ok)
    glance_mock.get(IMG, [{"json": {"status": "queued"}}, {"json": active()}])
    result = make(client).upload(vol, upload.ImageMeta("x"), store_id="cheap")
    assert result.attempts == 2
    # our own backoff is 0 here: the wait is Glance's
    assert waits == [3.0]


def test_an_upload_holds_its_record_until_its_image_settles(
    glance_mock: requests_mock.Mocker, client: glance.GlanceClient,
    vol: Path, tmp_path: Path,
) -> None:  # fmt: skip
    """The record is the sweep's proof: held while the data flows, gone
    once the image is active, left (unlocked) when the image could not be
    deleted after a failure.
    """
    from volume_image.core import sweep
    from volume_image.pipeline import records

    where = str(tmp_path / "conv")
    os.mkdir(where)
    ids = iter(["0e9c5b3e-0000-4000-8000-00000000000a",
                "0e9c5b3e-0000-4000-8000-00000000000b"])  # fmt: skip
    seen: list[dict[str, str]] = []
    posted: list[dict[str, object]] = []

    def create(request: requests.PreparedRequest, _: object) -> object:
        posted.append(json.loads(request.body or b"{}"))
        return {"id": next(ids)}

    def put(request: requests.PreparedRequest, context: object) -> str:
        seen.append(records.scan(where))
        b"".join(request.body)  # type: ignore[arg-type]
        context.status_code = 204 if len(seen) == 1 else 413  # type: ignore[attr-defined]
        return ""

    glance_mock.post(URL + "/v2/images", status_code=201, json=create)
    for suffix in "ab":
        url = f"{URL}/v2/images/0e9c5b3e-0000-4000-8000-00000000000{suffix}"
        glance_mock.put(url + "/file", text=put)
        glance_mock.get(url, json={**active(store="fast"), "id": url[-36:]})
        glance_mock.delete(url, status_code=403)
    uploader = make(client, conversion_dir=where, upload_retries=0)
    first = uploader.upload(vol, upload.ImageMeta("x"))
    assert seen[0] == {first.image_id: sweep.RUNNING}
    assert records.scan(where) == {}
    assert posted[0][sweep.MARK] == posted[0]["id"]
    with pytest.raises(errors.VolumeImageError):
        uploader.upload(vol, upload.ImageMeta("x"))
    assert records.scan(where) == {
        "0e9c5b3e-0000-4000-8000-00000000000b": sweep.RECORD
    }


@pytest.mark.parametrize("container", ["bare", "compressed"])
def test_a_volume_in_the_disk_format_is_inspected_too(
    glance_mock: requests_mock.Mocker, client: glance.GlanceClient,
    tmp_path: Path, container: str,
) -> None:  # fmt: skip
    """qcow2 sent as qcow2 needs no conversion, but its header is still
    read: one naming a host file as its backing file is refused before
    anything is created.
    """
    host = tmp_path / "host-secret"
    host.write_bytes(b"HOST SECRET" * 1000)
    vol = tmp_path / "v.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-f", "qcow2", "-b", str(host), "-F", "raw",
         str(vol)], check=True, capture_output=True,
    )  # fmt: skip
    meta = upload.ImageMeta(
        "x", disk_format="qcow2", container_format=container
    )
    with pytest.raises(errors.UnsafeSource, match="backing"):
        make(client, conversion_dir=str(tmp_path)).upload(
            vol, meta, source_format="qcow2"
        )
    assert not [r for r in glance_mock.request_history if r.method == "PUT"]


@pytest.mark.parametrize(
    "timeout",
    [requests.exceptions.ReadTimeout, requests.exceptions.ConnectTimeout],
)
def test_a_timed_out_put_is_never_sent_again(
    glance_mock: requests_mock.Mocker,
    client: glance.GlanceClient,
    vol: Path,
    timeout: type[Exception],
) -> None:
    """A Glance that stopped reading for upload_read_timeout would only
    cost that long again: the PUT is sent once, with retries left.
    """
    glance_mock.put(IMG + "/file", exc=timeout)
    glance_mock.get(IMG, json={"id": "i1", "status": "queued"})
    with pytest.raises(errors.GlanceUnavailable) as info:
        make(client, upload_retries=3).upload(vol, upload.ImageMeta("x"))
    assert info.value.timed_out
    puts = [r for r in glance_mock.request_history if r.method == "PUT"]
    assert len(puts) == 1
    assert glance_mock.request_history[-1].method == "DELETE"
