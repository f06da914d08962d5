"""haproxy from Debian, in front of several Glance nodes."""

from __future__ import annotations

import contextlib
import csv
import io
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from harness.servers.base import (
    Server,
    _apt_install,
    _other_port,
    _render,
    _sbin_which,
)


def ensure_haproxy() -> str:
    """Return the path of ``haproxy``, installing Debian's haproxy when it
    is missing and we are root (no system instance is started: no
    systemd; :class:`HAProxyServer` runs its own).
    """
    found = _sbin_which("haproxy")
    if found:
        return found
    _apt_install("haproxy")
    found = _sbin_which("haproxy")
    if not found:
        raise RuntimeError("haproxy installed but not found")
    return found


class HAProxyServer(Server):
    """Debian's haproxy (2.6) in front of servers on 127.0.0.1: HTTP mode,
    one front end on :attr:`port`, one backend ``glance`` with a server
    per entry of ``backends``, a stats page on :attr:`stats_port` and an
    admin socket, config from ``templates/haproxy.cfg``.

    The health check defaults are the ones that hold under upload load
    (the reference notes' problem #1: with ``timeout check`` = ``inter`` =
    1 s, checks queued behind busy upload workers put every node DOWN and
    clients got 503): a 5 s check timeout, every 2 s, DOWN after 3
    failures, UP after 2 successes.  A refused connect is retried on
    another server at once (``option redispatch``), so a killed node is
    invisible to clients even before it is marked DOWN.

    :param backends: server name -> port on 127.0.0.1, in order.
    :param balance: haproxy's algorithm (``roundrobin``; ``random`` mixes
        a client's requests over the nodes, see the notes' pitfall 7).
    :param check_path: the path of the HTTP health check; None checks
        that the port accepts a connection only (which uWSGI's listen
        queue does even when every worker is busy).
    :param timeout: client and server inactivity limit, seconds.
    """

    name = "haproxy"
    BACKEND = "glance"

    def __init__(
        self,
        base: Path,
        backends: Mapping[str, int],
        port: int | None = None,
        *,
        balance: str = "roundrobin",
        check_path: str | None = "/healthcheck",
        check_inter: float = 2.0,
        check_fall: int = 3,
        check_rise: int = 2,
        check_timeout: float = 5.0,
        timeout: float = 300.0,
    ) -> None:
        super().__init__(base, port)
        self.backends = dict(backends)
        self.stats_port = _other_port({self.port, *self.backends.values()})
        self.balance = balance
        self.check_path = check_path
        self.check_inter = check_inter
        self.check_fall = check_fall
        self.check_rise = check_rise
        self.check_timeout = check_timeout
        self.timeout = timeout

    @property
    def config(self) -> Path:
        return self.etc / "haproxy.cfg"

    @property
    def stats_url(self) -> str:
        """The stats page (``;csv`` appended gives CSV)."""
        return f"http://127.0.0.1:{self.stats_port}/stats"

    @property
    def admin_socket(self) -> Path:
        return self.base / "haproxy.sock"

    def command(self) -> list[str]:
        # -db: foreground, no daemon, no master-worker: our child's PID is
        # haproxy's, and "log stdout" goes to log_path
        return [
            ensure_haproxy(),
            "-db",
            "-f",
            str(self.config),
            "-p",
            str(self.pidfile),
        ]

    def prepare(self) -> None:
        if not self.backends:
            raise ValueError("haproxy needs at least one backend server")
        if len(str(self.admin_socket).encode()) > 107:
            raise RuntimeError(
                f"socket path too long for AF_UNIX: {self.admin_socket}"
            )
        check = ""
        if self.check_path is not None:
            check = (
                f"    option httpchk GET {self.check_path}\n"
                "    http-check expect status 200"
            )
        values = {
            "BASE": str(self.base),
            "PORT": str(self.port),
            "STATS_PORT": str(self.stats_port),
            "BALANCE": self.balance,
            "CHECK": check,
            "INTER": f"{self.check_inter:g}",
            "FALL": str(self.check_fall),
            "RISE": str(self.check_rise),
            "CHECK_TIMEOUT": f"{self.check_timeout:g}",
            "TIMEOUT": f"{self.timeout:g}",
            "SERVERS": "\n".join(
                f"    server {name} 127.0.0.1:{port}"
                for name, port in self.backends.items()
            ),
        }
        _render("haproxy.cfg", self.config, values)
        done = subprocess.run(
            [ensure_haproxy(), "-c", "-q", "-f", str(self.config)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode:
            raise RuntimeError(
                f"haproxy refuses {self.config}:\n{done.stdout}{done.stderr}"
            )

    def _answers(self) -> bool:
        # the front end would answer 503 while no server is UP yet; the
        # stats page answers as soon as haproxy runs
        try:
            with urllib.request.urlopen(  # noqa: S310 - our own loopback URL
                self.stats_url + ";csv", timeout=2
            ) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def start(self, timeout: float = 60.0) -> HAProxyServer:
        """Start; return when every backend server is UP (its first
        ``rise`` checks passed).
        """
        t0 = time.monotonic()
        super().start(timeout)
        try:
            self.wait_states(
                dict.fromkeys(self.backends, "UP"),
                max(1.0, timeout - (time.monotonic() - t0)),
            )
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - t0
        return self

    def stats(self) -> dict[str, dict[str, str]]:
        """The stats of the backend's servers: name -> the CSV columns
        (``status``: UP, DOWN, ``UP 1/3`` (going down), MAINT...;
        ``scur``: connections now; ``stot``: connections in all;
        ``chkdown``: UP->DOWN transitions; ``lastchg``: seconds since the
        last change).
        """
        with urllib.request.urlopen(  # noqa: S310 - our own loopback URL
            self.stats_url + ";csv", timeout=5
        ) as resp:
            text = resp.read().decode()
        # the header line is "# pxname,svname,...": a comment to csv
        rows = csv.DictReader(io.StringIO(text.removeprefix("# ")))
        return {
            row["svname"]: row
            for row in rows
            if row.get("pxname") == self.BACKEND
            and row.get("svname") not in ("FRONTEND", "BACKEND")
        }

    def states(self) -> dict[str, str]:
        """Each backend server's status (UP, DOWN, ``UP 1/3``, ...)."""
        return {name: row["status"] for name, row in self.stats().items()}

    def wait_states(
        self, wanted: Mapping[str, str], timeout: float = 30.0
    ) -> None:
        """Wait until each named server has the given status.

        :raises RuntimeError: not in time; the message has the states.
        """
        deadline = time.monotonic() + timeout
        states: dict[str, str] = {}
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                states = self.states()
                if all(states.get(n) == s for n, s in wanted.items()):
                    return
            time.sleep(0.1)
        raise RuntimeError(
            f"haproxy servers not {dict(wanted)} within {timeout}s: "
            f"{states}\n{self.log_tail()}"
        )

    def admin(self, command: str, timeout: float = 5.0) -> str:
        """Send one command to the admin socket (``disable server
        glance/a``, ``show servers state``...); return the answer.
        """
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(self.admin_socket))
            sock.sendall(command.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace")
