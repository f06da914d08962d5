"""MariaDB from Debian, for the production-shaped Glance."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

from harness.servers.base import Server, _apt_install, _sbin_which


def ensure_mariadb() -> str:
    """Return the path of ``mariadbd``, installing Debian's mariadb-server
    when it is missing and we are root.

    The package's postinst does not start the system instance here (no
    systemd, ``policy-rc.d``), and :class:`MariaDBServer` would not use
    it anyway: it runs its own ``mariadbd --no-defaults``.
    """
    found = _sbin_which("mariadbd") or _sbin_which("mysqld")
    if found and _sbin_which("mariadb-install-db"):
        return found
    _apt_install("mariadb-server")
    found = _sbin_which("mariadbd") or _sbin_which("mysqld")
    if not found or not _sbin_which("mariadb-install-db"):
        raise RuntimeError(
            "mariadb-server installed but mariadbd or mariadb-install-db "
            "not found"
        )
    return found


class MariaDBServer(Server):
    """Debian's MariaDB (10.11) as a plain process of ours, 127.0.0.1 only,
    for a production-shaped Glance (several workers, several nodes).

    Everything lives under ``base``: the datadir (made once by
    ``mariadb-install-db``, reused by later starts in the same ``base``),
    the socket and the pidfile.  ``--no-defaults``: nothing is read from
    /etc/mysql, and the system instance of the package is never started.
    root logs in without a password over the private socket only
    (``sql``); Glance logs in over TCP as :attr:`USER`.

    :param port: the TCP port (free by default).
    """

    name = "mariadb"
    #: the user every database made by :meth:`create_database` is granted
    #: to, from 127.0.0.1 only; the password is the same word
    USER = "glance"

    def __init__(self, base: Path, port: int | None = None) -> None:
        super().__init__(base, port)
        self.datadir = self.base / "data"
        self.socket_path = self.base / "mysqld.sock"
        #: seconds ``mariadb-install-db`` took (0 when the datadir existed)
        self.install_seconds = 0.0

    @property
    def url(self) -> str:
        """The server's address (for messages)."""
        return f"mysql://127.0.0.1:{self.port}"

    @property
    def pidfile(self) -> Path:
        return self.base / "mariadb.pid"

    def database_url(self, database: str = "glance") -> str:
        """The SQLAlchemy URL (PyMySQL) of ``database`` as :attr:`USER`."""
        return (
            f"mysql+pymysql://{self.USER}:{self.USER}@127.0.0.1:{self.port}"
            f"/{database}?charset=utf8mb4"
        )

    @staticmethod
    def _user() -> str:
        # mariadbd refuses to run as root unless told --user=root
        return pwd.getpwuid(os.geteuid()).pw_name

    def command(self) -> list[str]:
        return [
            ensure_mariadb(),
            "--no-defaults",
            f"--user={self._user()}",
            f"--datadir={self.datadir}",
            f"--socket={self.socket_path}",
            f"--pid-file={self.pidfile}",
            f"--port={self.port}",
            "--bind-address=127.0.0.1",
            # no DNS lookups of 127.0.0.1 at each login
            "--skip-name-resolve",
            # each Glance worker keeps a pool of up to 15 (GlanceServer
            # pins it): 2 nodes x 4 workers x 15 = 120 is close to the
            # default limit, 151
            "--max-connections=500",
            "--innodb-buffer-pool-size=128M",
            # a test database need not survive a power cut: no fsync per
            # commit
            "--innodb-flush-log-at-trx-commit=2",
            "--character-set-server=utf8mb4",
            "--collation-server=utf8mb4_general_ci",
            # no --log-error: the error log goes to stderr, i.e. log_path
        ]

    def prepare(self) -> None:
        if len(str(self.socket_path).encode()) > 107:
            raise RuntimeError(
                f"socket path too long for AF_UNIX: {self.socket_path}"
            )
        if (self.datadir / "mysql").is_dir():
            return
        t0 = time.monotonic()
        shutil.rmtree(self.datadir, ignore_errors=True)  # a half-made one
        log = self.base / "log" / "install-db.log"
        with open(log, "wb") as out:
            rc = subprocess.run(
                [
                    _sbin_which("mariadb-install-db") or "mariadb-install-db",
                    "--no-defaults",
                    f"--user={self._user()}",
                    f"--datadir={self.datadir}",
                    # root without password, over the private socket
                    "--auth-root-authentication-method=normal",
                    "--skip-test-db",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                check=False,
            ).returncode
        if rc:
            shutil.rmtree(self.datadir, ignore_errors=True)
            raise RuntimeError(
                "mariadb-install-db failed:\n"
                + log.read_text(errors="replace")[-3000:]
            )
        self.install_seconds = time.monotonic() - t0

    def _answers(self) -> bool:
        # the server speaks first: a handshake packet (4-byte header, then
        # protocol version 10); an error packet (0xff) or nothing is "no"
        try:
            with socket.create_connection(
                ("127.0.0.1", self.port), timeout=2
            ) as sock:
                head = sock.recv(5)
                return len(head) == 5 and head[4] == 10
        except OSError:
            return False

    def start(self, timeout: float = 60.0) -> MariaDBServer:
        """Make the datadir if needed, start; return when it accepts
        logins and database ``glance`` exists.
        """
        super().start(timeout)
        t0 = time.monotonic()
        self.create_database("glance")
        self.startup_seconds += time.monotonic() - t0
        return self

    def sql(self, statements: str, timeout: float = 30.0) -> str:
        """Run SQL as root over the socket; return the client's output
        (tab-separated, no column names).

        :raises RuntimeError: the client failed; the message has its error.
        """
        client = _sbin_which("mariadb") or _sbin_which("mysql") or "mariadb"
        done = subprocess.run(
            [
                client,
                "--no-defaults",
                f"--socket={self.socket_path}",
                "--user=root",
                "--batch",
                "--skip-column-names",
            ],
            input=statements,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode:
            raise RuntimeError(f"SQL failed on {self.url}: {done.stderr}")
        return done.stdout

    def create_database(self, database: str) -> str:
        """Create ``database`` (if missing) for :attr:`USER`; return its
        :meth:`database_url`.
        """
        if not re.fullmatch(r"[A-Za-z0-9_]{1,64}", database):
            raise ValueError(f"not a plain database name: {database!r}")
        user = f"'{self.USER}'@'127.0.0.1'"
        self.sql(
            f"CREATE DATABASE IF NOT EXISTS `{database}` "
            "CHARACTER SET utf8mb4;\n"
            f"CREATE USER IF NOT EXISTS {user} "
            f"IDENTIFIED BY '{self.USER}';\n"
            f"GRANT ALL ON `{database}`.* TO {user};\n"
        )
        return self.database_url(database)

    def drop_database(self, database: str) -> None:
        """Drop ``database`` if it exists."""
        if not re.fullmatch(r"[A-Za-z0-9_]{1,64}", database):
            raise ValueError(f"not a plain database name: {database!r}")
        self.sql(f"DROP DATABASE IF EXISTS `{database}`;\n")
