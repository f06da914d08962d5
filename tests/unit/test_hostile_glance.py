"""Hostile answers at the HTTP edge, from a tiny server on 127.0.0.1:
redirects are never followed, bodies are capped.
"""

from __future__ import annotations

import http.server
import io
import json
import threading
import time
from collections.abc import Iterator
from typing import ClassVar

import pytest
from keystoneauth1 import adapter, session

from volume_image import errors
from volume_image.cli import main as cli
from volume_image.clients import blockstorage, glance

#: clear the screen, set the window title, forge a log line
ESCAPES = "\x1b[2J\x1b]0;owned\x07\r\nvolume-image: all fine"


class Hostile(http.server.BaseHTTPRequestHandler):
    """Answers by path: /redirect -> 302 elsewhere; /endless -> a body
    that never ends; anything else -> a 200 JSON answer.
    """

    seen: ClassVar[list[tuple[str, str | None]]] = []

    def do_GET(self) -> None:
        Hostile.seen.append((self.path, self.headers.get("X-Auth-Token")))
        if self.path.startswith("/v2/info/stores") and "redirect" in (
            self.server.mode  # type: ignore[attr-defined]
        ):
            self.send_response(302)
            self.send_header("Location", "http://127.0.0.2:9/steal")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.server.mode == "trickle":  # type: ignore[attr-defined]
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            try:
                for _ in range(600):  # a byte every 10 ms, for 6 s
                    self.wfile.write(b" ")
                    self.wfile.flush()
                    time.sleep(0.01)
            except OSError:
                return
            return
        if self.server.mode == "endless":  # type: ignore[attr-defined]
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            try:
                self.wfile.write(b'{"stores": [')
                while True:
                    self.wfile.write(b'{"id": "x"},' * 4096)
            except OSError:
                return
        body = b'{"stores": [{"id": "fast", "default": "true"}]}'
        if self.server.mode == "escapes":  # type: ignore[attr-defined]
            body = json.dumps(
                {
                    "stores": [
                        {
                            "id": "fast",
                            "default": "true",
                            "description": ESCAPES,
                        }
                    ]
                }
            ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def hostile() -> Iterator[http.server.ThreadingHTTPServer]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hostile)
    server.daemon_threads = True
    server.mode = "plain"  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Hostile.seen = []
    yield server
    server.shutdown()
    server.server_close()


def client(server: http.server.HTTPServer, cap: int) -> glance.GlanceClient:
    url = f"http://127.0.0.1:{server.server_address[1]}"
    sess = session.Session(timeout=10)
    return glance.GlanceClient(
        adapter.Adapter(
            sess,
            endpoint_override=url,
            additional_headers={"X-Auth-Token": "secret-token"},
        ),
        max_response_bytes=cap,
    )


def test_a_redirect_is_an_error_and_never_followed(
    hostile: http.server.ThreadingHTTPServer,
) -> None:
    hostile.mode = "redirect"  # type: ignore[attr-defined]
    with pytest.raises(errors.GlanceRequestError, match="not followed"):
        client(hostile, 1 << 20).get_store_catalog()
    # only our server was asked; the token went nowhere else
    assert all(path.startswith("/v2/info/stores") for path, _ in Hostile.seen)


def test_an_endless_body_is_cut_at_the_cap(
    hostile: http.server.ThreadingHTTPServer,
) -> None:
    hostile.mode = "endless"  # type: ignore[attr-defined]
    with pytest.raises(errors.GlanceRequestError, match="longer than 65536"):
        client(hostile, 64 * 1024).get_store_catalog()


def test_a_normal_answer_is_read(
    hostile: http.server.ThreadingHTTPServer,
) -> None:
    catalog = client(hostile, 1024).get_store_catalog()
    assert [s.id for s in catalog.stores] == ["fast"]


def test_the_block_storage_api_is_capped_too(
    hostile: http.server.ThreadingHTTPServer,
) -> None:
    hostile.mode = "endless"  # type: ignore[attr-defined]
    url = f"http://127.0.0.1:{hostile.server_address[1]}"
    bs = adapter.Adapter(session.Session(timeout=10), endpoint_override=url)
    with pytest.raises(errors.BlockStorageError, match="longer than 65536"):
        blockstorage.list_volume_types(bs, max_response_bytes=64 * 1024)


def test_terminal_sequences_are_shown_escaped(
    hostile: http.server.ThreadingHTTPServer,
) -> None:
    hostile.mode = "escapes"  # type: ignore[attr-defined]
    url = f"http://127.0.0.1:{hostile.server_address[1]}"
    args = ["--os-auth-type", "none", "--os-endpoint", url, "stores"]
    out, err = io.StringIO(), io.StringIO()
    assert cli.main(args, out=out, err=err) == 0, err.getvalue()
    text = out.getvalue()
    assert "\x1b" not in text and "\r" not in text
    assert "\\x1b[2J\\x1b]0;owned\\x07\\r\\n" in text
    # JSON stays exact
    out = io.StringIO()
    assert cli.main([*args, "--format", "json"], out=out, err=err) == 0
    doc = json.loads(out.getvalue())
    assert doc["stores"][0]["description"] == ESCAPES


def test_a_trickling_answer_is_cut_at_the_deadline(
    hostile: http.server.ThreadingHTTPServer,
) -> None:
    """A byte every 10 ms never trips a read timeout; the deadline does."""
    hostile.mode = "trickle"  # type: ignore[attr-defined]
    url = f"http://127.0.0.1:{hostile.server_address[1]}"
    slow = glance.GlanceClient(
        adapter.Adapter(session.Session(timeout=10), endpoint_override=url),
        answer_deadline=1.0,
    )
    t0 = time.monotonic()
    with pytest.raises(errors.GlanceUnavailable, match="answer_deadline"):
        slow.get_store_catalog()
    assert time.monotonic() - t0 < 3
