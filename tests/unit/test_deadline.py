"""One deadline per operation: every wait bounded, retries included."""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import requests_mock
from keystoneauth1 import adapter, session

from volume_image import errors
from volume_image.clients import _transport as _ksa
from volume_image.clients import glance
from volume_image.core import deadline
from volume_image.pipeline import uploader as upload

from ..rawserver import raw_server
from .conftest import URL, Clock
from .test_upload import DATA, IMG, Recorder, active, make


def test_a_budget_counts_down_except_while_paused() -> None:
    clock = Clock()
    budget = deadline.Budget(10, clock=clock)
    clock.now += 3
    assert budget.remaining() == 7
    with budget.paused():
        clock.now += 100
        assert budget.remaining() == 7
        with budget.paused():  # nested: counted once
            clock.now += 5
    assert budget.remaining() == 7
    clock.now += 8
    assert budget.remaining() == -1


def test_nested_budgets_only_tighten_unless_fresh() -> None:
    assert deadline.remaining() is None
    with deadline.within(0.5):
        with deadline.within(60):
            left = deadline.remaining()
            assert left is not None and left <= 0.5
        with deadline.within(60, fresh=True):
            left = deadline.remaining()
            assert left is not None and left > 59
    assert deadline.remaining() is None


def test_each_thread_has_its_own_deadline() -> None:
    seen: list[float | None] = []
    with deadline.within(1):
        worker = threading.Thread(
            target=lambda: seen.append(deadline.remaining())
        )
        worker.start()
        worker.join()
    assert seen == [None]


@pytest.fixture
def hung() -> Iterator[tuple[int, list[socket.socket]]]:
    """A server that accepts every connection and never answers; it
    counts the connections it was asked on.
    """
    with raw_server() as server:
        yield server


def hung_client(port: int, timeout: float) -> glance.GlanceClient:
    sess = session.Session(timeout=timeout)
    return glance.GlanceClient(
        adapter.Adapter(
            sess,
            endpoint_override=f"http://127.0.0.1:{port}",
            connect_retries=3,
        ),
        use_store_detail=False,
    )


def test_a_read_timeout_is_not_retried(
    hung: tuple[int, list[socket.socket]],
) -> None:
    """keystoneauth would retry it 3 times, 4 x the timeout in all."""
    port, accepted = hung
    t0 = time.monotonic()
    with pytest.raises(errors.GlanceUnavailable, match="timed out") as info:
        hung_client(port, 0.4).get_store_catalog()
    assert info.value.timed_out
    assert time.monotonic() - t0 < 1.2
    assert len(accepted) == 1


def test_the_deadline_cuts_a_long_timeout(
    hung: tuple[int, list[socket.socket]],
) -> None:
    port, _ = hung
    t0 = time.monotonic()
    with deadline.within(0.5):
        with pytest.raises(errors.GlanceUnavailable) as info:
            hung_client(port, 60).get_store_catalog()
    assert info.value.timed_out
    assert time.monotonic() - t0 < 1.5


def test_nothing_is_sent_past_the_deadline(
    rmock: requests_mock.Mocker, client: glance.GlanceClient
) -> None:
    rmock.get(URL + "/v2/info/stores/detail", json={"stores": []})
    with deadline.within(0):
        with pytest.raises(
            errors.GlanceUnavailable, match="operation_deadline"
        ):
            client.get_store_catalog()
    assert rmock.call_count == 0


@pytest.fixture
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    slept: list[float] = []
    monkeypatch.setattr(_ksa.time, "sleep", slept.append)
    return slept


def refused_client(retries: int) -> glance.GlanceClient:
    sess = session.Session(timeout=5)
    return glance.GlanceClient(
        adapter.Adapter(sess, endpoint_override=URL, connect_retries=retries),
        use_store_detail=False,
    )


def test_a_refused_connection_is_tried_again(
    rmock: requests_mock.Mocker, no_sleep: list[float]
) -> None:
    rmock.get(
        URL + "/v2/info/stores",
        [
            {"exc": requests.exceptions.ConnectionError("refused")},
            {"exc": requests.exceptions.ConnectionError("refused")},
            {"json": {"stores": [{"id": "fast", "default": "true"}]}},
        ],
    )
    catalog = refused_client(3).get_store_catalog()
    assert [s.id for s in catalog.stores] == ["fast"]
    assert rmock.call_count == 3
    assert no_sleep == [0.5, 1.0]


def test_refused_retries_stop_at_the_deadline(
    rmock: requests_mock.Mocker, no_sleep: list[float]
) -> None:
    rmock.get(
        URL + "/v2/info/stores",
        exc=requests.exceptions.ConnectionError("refused"),
    )
    with deadline.within(0.8):
        with pytest.raises(errors.GlanceUnavailable):
            refused_client(3).get_store_catalog()
    # 0.5 s fit in the budget, the next 1 s would not
    assert rmock.call_count == 2
    assert no_sleep == [0.5]


@pytest.fixture
def glance_mock(rmock: requests_mock.Mocker) -> requests_mock.Mocker:
    rmock.get(
        URL + "/v2/info/stores/detail",
        json={"stores": [{"id": "fast", "default": "true"}, {"id": "cheap"}]},
    )
    rmock.post(URL + "/v2/images", status_code=201, json={"id": "i1"})
    rmock.delete(IMG, status_code=204)
    return rmock


def test_the_data_flow_does_not_count(
    glance_mock: requests_mock.Mocker,
    client: glance.GlanceClient,
    tmp_path: Path,
) -> None:
    vol = tmp_path / "v"
    vol.write_bytes(DATA)

    def slow_put(request, context):  # type: ignore[no-untyped-def]
        b"".join(request.body)
        time.sleep(1.2)
        context.status_code = 204
        return ""

    glance_mock.put(IMG + "/file", text=slow_put)
    glance_mock.get(IMG, json=active())
    result = make(client, operation_deadline=1.0).upload(
        vol, upload.ImageMeta("x"), store_id="cheap"
    )
    assert result.verified and result.seconds > 1.2


def test_retries_stop_at_the_deadline_and_clean_up(
    glance_mock: requests_mock.Mocker,
    client: glance.GlanceClient,
    tmp_path: Path,
) -> None:
    vol = tmp_path / "v"
    vol.write_bytes(DATA)
    rec = Recorder(*[503] * 6)
    glance_mock.put(IMG + "/file", text=rec)
    glance_mock.get(IMG, json={"status": "queued"})
    uploader = make(client, operation_deadline=1.0, upload_retries=5)
    uploader.settings = dataclasses.replace(
        uploader.settings, upload_retry_delay=0.4
    )
    t0 = time.monotonic()
    with pytest.raises(errors.GlanceUnavailable) as info:
        uploader.upload(vol, upload.ImageMeta("x"), store_id="cheap")
    # waits of 0.4 and 0.8 s: the second would pass the 1 s budget
    assert len(rec.bodies) == 2
    assert "operation_deadline" in str(info.value)
    assert time.monotonic() - t0 < 1.5
    # cleanup still ran, on a budget of its own
    assert glance_mock.request_history[-1].method == "DELETE"


def test_the_data_flow_keeps_its_timeouts_and_its_answer(
    glance_mock: requests_mock.Mocker,
    client: glance.GlanceClient,
    tmp_path: Path,
) -> None:
    """An upload longer than the deadline: its PUT keeps (connect,
    upload_read_timeout), and Glance's error answer after the data is
    read and named, not taken for a slow Glance (and sent again).
    """
    vol = tmp_path / "v"
    vol.write_bytes(DATA)
    puts = []

    def slow_then_413(request, context):  # type: ignore[no-untyped-def]
        b"".join(request.body)
        puts.append(request.timeout)
        time.sleep(1.2)
        context.status_code = 413
        return '{"message": "Image exceeds the storage quota"}'

    glance_mock.put(IMG + "/file", text=slow_then_413)
    glance_mock.get(IMG, json={"status": "queued"})
    with pytest.raises(errors.QuotaExceeded):
        make(client, operation_deadline=1.0).upload(
            vol, upload.ImageMeta("x"), store_id="cheap"
        )
    assert puts == [(5, 300.0)]


@pytest.fixture
def cutter() -> Iterator[tuple[int, list[socket.socket]]]:
    """A server that reads a request, then closes without answering."""

    def cut(conn: socket.socket) -> None:
        conn.recv(65536)
        conn.close()

    with raw_server(cut) as server:
        yield server


def test_a_post_cut_after_sending_is_not_sent_again(
    cutter: tuple[int, list[socket.socket]], no_sleep: list[float]
) -> None:
    """The image may exist already: a second POST would make another."""
    port, seen = cutter
    client = hung_client(port, 5)
    with pytest.raises(errors.GlanceUnavailable):
        client.create_image({"name": "x"})
    assert len(seen) == 1 and no_sleep == []


def test_a_get_cut_midway_is_asked_again(
    cutter: tuple[int, list[socket.socket]], no_sleep: list[float]
) -> None:
    port, seen = cutter
    with pytest.raises(errors.GlanceUnavailable):
        hung_client(port, 5).get_store_catalog()
    assert len(seen) == 4  # connect_retries = 3


def test_a_refused_post_is_tried_again(no_sleep: list[float]) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens: refused
    with pytest.raises(errors.GlanceUnavailable, match="refused"):
        hung_client(port, 5).create_image({"name": "x"})
    assert no_sleep == [0.5, 1.0, 2.0]


@pytest.fixture
def stalls_mid_answer() -> Iterator[int]:
    """Headers and half a body, then nothing."""

    def stall(conn: socket.socket) -> None:
        conn.recv(65536)
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n" + b'{"stores": ['
        )

    with raw_server(stall) as (port, _):
        yield port


def test_a_stall_mid_answer_is_a_clean_timeout(stalls_mid_answer: int) -> None:
    """urllib3's own ReadTimeoutError never escapes (it did: a traceback
    on the command line, a 500 from the API hook).
    """
    with pytest.raises(errors.GlanceUnavailable, match="timed out") as info:
        hung_client(stalls_mid_answer, 0.3).get_store_catalog()
    assert info.value.timed_out
