"""RabbitMQ from Debian, one vhost per Cinder stack."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

from harness.servers.base import (
    Server,
    _apt_install,
    _other_port,
    _stop_pid,
    _tcp_open,
)

RABBITMQ_SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")


def ensure_rabbitmq() -> Path:
    """Return the path of RabbitMQ's start script, installing Debian's
    rabbitmq-server when it is missing and we are root.

    The package's postinst does not start a broker here (no systemd):
    :class:`RabbitServer` runs its own.
    """
    if RABBITMQ_SERVER.exists():
        return RABBITMQ_SERVER
    _apt_install("rabbitmq-server")
    if not RABBITMQ_SERVER.exists():
        raise RuntimeError(
            f"rabbitmq-server installed but {RABBITMQ_SERVER} not found"
        )
    return RABBITMQ_SERVER


class RabbitServer(Server):
    """Debian's RabbitMQ 3.10 as a plain process of ours, 127.0.0.1 only.

    Everything of the broker lives under ``base``: mnesia, log, Erlang
    cookie (``HOME``), configuration (nothing read from /etc).  It runs
    with its own ``epmd`` on its own port, so it neither meets another
    run's broker nor leaves a system epmd on 0.0.0.0:4369 behind, and its
    Erlang distribution port is a free port on 127.0.0.1 too.  No
    plugins; the default ``guest`` user, which RabbitMQ lets in over
    loopback only, is what :attr:`transport_url` uses.

    :param port: the AMQP port (free by default); the distribution and
        epmd ports are picked free as well.
    """

    name = "rabbitmq"

    def __init__(self, base: Path, port: int | None = None) -> None:
        super().__init__(base, port)
        taken = {self.port}
        self.dist_port = _other_port(taken)
        self.epmd_port = _other_port(taken)
        # unique per broker: rabbitmqctl finds the node by this name
        self.nodename = f"vi{self.port}@localhost"
        self.epmd: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The AMQP address (for messages)."""
        return f"amqp://127.0.0.1:{self.port}"

    @property
    def transport_url(self) -> str:
        """oslo.messaging's ``transport_url`` for this broker."""
        return f"rabbit://guest:guest@127.0.0.1:{self.port}/"

    def vhost_url(self, name: str) -> str:
        """A ``transport_url`` on a virtual host of its own, made if
        needed: two Cinder stacks on one broker each need one, as their
        queues (``cinder-scheduler``, ...) are named alike whatever the
        exchange, and one stack's services would take the other's casts.
        """
        if name not in self.ctl("list_vhosts", "--quiet").split():
            self.ctl("add_vhost", name)
            self.ctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        return f"rabbit://guest:guest@127.0.0.1:{self.port}/{name}"

    def command(self) -> list[str]:
        # with RUNNING_UNDER_SYSTEMD the script `exec`s erl: our child's
        # PID is the broker's (beam.smp), so stopping by PID works
        return [str(ensure_rabbitmq())]

    def environment(self) -> dict[str, str]:
        """The environment of the broker, its epmd and ``rabbitmqctl``."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("RABBITMQ_", "ERL_"))
        }
        env.update(
            # the Erlang cookie is $HOME/.erlang.cookie
            HOME=str(self.base),
            RABBITMQ_NODENAME=self.nodename,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.port),
            # default would be AMQP port + 20000, maybe taken
            RABBITMQ_DIST_PORT=str(self.dist_port),
            ERL_EPMD_ADDRESS="127.0.0.1",
            ERL_EPMD_PORT=str(self.epmd_port),
            RABBITMQ_MNESIA_BASE=str(self.base / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.base / "log"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.etc / "enabled_plugins"),
            # RabbitMQ adds ".conf"
            RABBITMQ_CONFIG_FILE=str(self.etc / "rabbitmq"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(self.etc / "advanced.config"),
            # empty: nothing from /etc/rabbitmq/rabbitmq-env.conf
            RABBITMQ_CONF_ENV_FILE=str(self.etc / "rabbitmq-env.conf"),
            RABBITMQ_PID_FILE=str(self.pidfile),
            RUNNING_UNDER_SYSTEMD="1",
            # every erl (the broker and rabbitmqctl's hidden node) would
            # listen for Erlang distribution on 0.0.0.0 otherwise
            ERL_FLAGS="-kernel inet_dist_use_interface {127,0,0,1}",
            # a failed start writes one; not into the caller's directory
            ERL_CRASH_DUMP=str(self.base / "log" / "erl_crash.dump"),
        )
        return env

    def prepare(self) -> None:
        (self.base / "mnesia").mkdir(parents=True, exist_ok=True)
        (self.etc / "enabled_plugins").write_text("[].\n")
        (self.etc / "advanced.config").write_text("[].\n")
        (self.etc / "rabbitmq-env.conf").write_text("")
        (self.etc / "rabbitmq.conf").write_text(
            "\n".join(
                [
                    f"listeners.tcp.1 = 127.0.0.1:{self.port}",
                    # guest may log in over loopback only (the default)
                    "loopback_users.guest = true",
                    # the whole log on stdout, i.e. in log_path
                    "log.console = true",
                    "log.console.level = info",
                    "log.console.use_colors = off",
                    "log.file = false",
                    "",
                ]
            )
        )

    def _answers(self) -> bool:
        # an AMQP 0-9-1 protocol header is answered with connection.start,
        # a method frame (type 1): the broker accepts clients
        try:
            with socket.create_connection(
                ("127.0.0.1", self.port), timeout=2
            ) as sock:
                sock.sendall(b"AMQP\x00\x00\x09\x01")
                return sock.recv(1) == b"\x01"
        except OSError:
            return False

    def start(self, timeout: float = 90.0) -> RabbitServer:
        """Start epmd, then the broker; return when it speaks AMQP."""
        (self.base / "log").mkdir(parents=True, exist_ok=True)
        with open(self.base / "log" / "epmd.log", "ab") as log:
            self.epmd = subprocess.Popen(
                [
                    "epmd",
                    "-address",
                    "127.0.0.1",
                    "-port",
                    str(self.epmd_port),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.environment(),
                start_new_session=True,
            )
        try:
            deadline = time.monotonic() + 10
            while not _tcp_open(self.epmd_port):
                if self.epmd.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"epmd did not start on port {self.epmd_port}"
                    )
                time.sleep(0.05)
            super().start(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def ctl(self, *args: str, timeout: float = 60.0) -> str:
        """Run ``rabbitmqctl -n NODE ARGS`` against this broker; return
        its output.
        """
        ctl = ensure_rabbitmq().parent / "rabbitmqctl"
        return subprocess.run(
            [str(ctl), "-n", self.nodename, *args],
            capture_output=True,
            text=True,
            env=self.environment(),
            timeout=timeout,
            check=True,
        ).stdout

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the broker (SIGTERM, a clean shutdown), then its epmd."""
        super().stop(timeout)
        if self.epmd is not None:
            _stop_pid(self.epmd, timeout)
            self.epmd = None

    def kill(self) -> None:
        """Kill the broker at once (a crash); its epmd stops cleanly."""
        super().kill()
        if self.epmd is not None:
            _stop_pid(self.epmd, 5)
            self.epmd = None
