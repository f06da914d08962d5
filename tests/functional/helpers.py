"""Test helpers that act on real connections and real files."""

from __future__ import annotations

import http.client
import http.server
import io
import json
import re
import socket
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

from harness import launcher


class CuttingProxy:
    """A loopback TCP proxy that cuts the first ``cuts`` connections whose
    client has sent more than ``cut_after`` bytes: a stream cut mid-upload.
    """

    def __init__(
        self, upstream_port: int, cut_after: int, cuts: int = 1
    ) -> None:
        self.upstream_port = upstream_port
        self.cut_after = cut_after
        self.cuts_left = cuts
        self.cuts_done = 0
        self._lock = threading.Lock()
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self.port = self._sock.getsockname()[1]
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._stop = True
        self._sock.close()

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(
                ("127.0.0.1", self.upstream_port)
            )
            threading.Thread(
                target=self._pump, args=(client, upstream, True), daemon=True
            ).start()
            threading.Thread(
                target=self._pump, args=(upstream, client, False), daemon=True
            ).start()

    def _pump(
        self, src: socket.socket, dst: socket.socket, upload: bool
    ) -> None:
        sent = 0
        try:
            while data := src.recv(65536):
                sent += len(data)
                if upload and sent > self.cut_after:
                    with self._lock:
                        cut = self.cuts_left > 0
                        if cut:
                            self.cuts_left -= 1
                            self.cuts_done += 1
                    if cut:
                        break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


class ThrottledFile(io.RawIOBase):
    """A seekable in-memory volume that reads at about ``rate`` bytes/s."""

    def __init__(self, data: bytes, rate: float) -> None:
        self._buf = io.BytesIO(data)
        self._rate = rate
        self.read_bytes = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, pos: int, whence: int = 0) -> int:
        return self._buf.seek(pos, whence)

    def read(self, n: int = -1) -> Any:
        chunk = self._buf.read(min(n, 256 * 1024) if n > 0 else 256 * 1024)
        time.sleep(len(chunk) / self._rate)
        self.read_bytes += len(chunk)
        return chunk


class GlanceProxy:
    """A loopback HTTP proxy in front of a real Glance, for cinder-api's
    and our filter's store checks.

    * ``boolean_flags``: rewrite ``"read-only": "true"`` in the store list
      to the JSON boolean ``true``, as other Glance deployments answer;
    * :meth:`stop` / :meth:`start`: Glance unreachable (connection
      refused) and back, on the same port;
    * ``paths``: every path asked, to count the store-list calls;
    * ``fail_image_gets``: answer that many ``GET /v2/images/{id}`` with
      503 (a node behind a load balancer restarting) before passing them.
    """

    def __init__(self, upstream_url: str) -> None:
        parts = urllib.parse.urlsplit(upstream_url)
        self._upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.boolean_flags = False
        self.paths: list[str] = []
        self.fail_image_gets = 0
        #: called after a PUT of image data has been answered
        self.on_put_done: Any = None
        self.port = launcher.free_port()
        self._server: http.server.ThreadingHTTPServer | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _forward(self) -> None:
                proxy.paths.append(self.path)
                if (
                    self.command == "GET"
                    and re.fullmatch(r"/v2/images/[^/?]+", self.path)
                    and proxy.fail_image_gets > 0
                ):
                    proxy.fail_image_gets -= 1
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.send_header("Connection", "close")
                    self.end_headers()
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() not in ("host", "connection")
                }
                conn = http.client.HTTPConnection(*proxy._upstream, timeout=30)
                conn.request(self.command, self.path, body, headers)
                resp = conn.getresponse()
                data = resp.read()
                conn.close()
                if (
                    self.command == "PUT"
                    and self.path.endswith("/file")
                    and proxy.on_put_done is not None
                ):
                    # before the client hears the answer
                    proxy.on_put_done()
                if proxy.boolean_flags and self.path.startswith(
                    "/v2/info/stores"
                ):
                    data = _boolean_flags(data)
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in (
                        "content-length",
                        "transfer-encoding",
                        "connection",
                    ):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _forward

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(
            ("127.0.0.1", self.port), Handler
        )
        self._server.daemon_threads = True
        threading.Thread(
            target=self._server.serve_forever, daemon=True
        ).start()

    def stop(self) -> None:
        """Close the port: connections are refused until :meth:`start`."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def store_calls(self) -> int:
        return sum(1 for p in self.paths if p.startswith("/v2/info/stores"))


def _boolean_flags(data: bytes) -> bytes:
    doc = json.loads(data)
    for store in doc.get("stores", []):
        if "read-only" in store:
            store["read-only"] = str(store["read-only"]).lower() == "true"
    return json.dumps(doc).encode()


def write_clouds(
    keystone: launcher.KeystoneServer,
    directory: Path,
    *,
    name: str = "clouds.yaml",
    extra: dict[str, dict[str, Any]] | None = None,
) -> None:
    """A cloud per user, passwords apart in secure.yaml; ``extra`` adds
    settings to a cloud (``{"demo": {"interface": "admin"}}``).
    """
    clouds: dict[str, Any] = {}
    secrets: dict[str, Any] = {}
    for user in ("admin", "demo", "demo-reader"):
        password, project, _ = keystone.USERS[user]
        clouds[user] = {
            "auth": {
                "auth_url": keystone.auth_url,
                "username": user,
                "project_name": project,
                "user_domain_id": "default",
                "project_domain_id": "default",
            },
            "region_name": keystone.REGION,
            "interface": "public",
            **(extra or {}).get(user, {}),
        }
        secrets[user] = {"auth": {"password": password}}
    directory.mkdir(parents=True, exist_ok=True)
    # JSON is YAML
    (directory / name).write_text(json.dumps({"clouds": clouds}))
    (directory / "secure.yaml").write_text(json.dumps({"clouds": secrets}))
