"""cinder-api 29 alone under uWSGI (or gunicorn)."""

from __future__ import annotations

import os
from pathlib import Path

from harness.servers.base import Server, _render, ensure_venv
from harness.servers.keystone import KeystoneServer

PROJECT_ID = "6d9c5a1e0f2b4c3d8e7f6a5b4c3d2e1f"


class CinderServer(Server):
    """cinder-api 29 alone (no scheduler or volume service): sqlite,
    ``auth_strategy = noauth``, ``transport_url = fake://``, asking the
    Glance at ``glance_url``.

    :param with_filter: put our ``store_validation`` filter in the API
        pipeline; False runs upstream's pipeline unchanged.
    :param filter_options: paste options of the filter; by default it
        reaches Glance at ``glance_url``.
    :param wsgi_server: ``"uwsgi"`` (Cinder's own choice in devstack), or
        ``"gunicorn"``, which passes chunked request bodies (no
        Content-Length) to the application with ``wsgi.input_terminated``
        set, as mod_wsgi does with ``WSGIChunkedRequest On``.
    """

    name = "cinder-api"
    ready_status = 300

    def __init__(
        self,
        base: Path,
        glance_url: str,
        port: int | None = None,
        *,
        with_filter: bool = True,
        filter_options: dict[str, str] | None = None,
        keystone: KeystoneServer | None = None,
        wsgi_server: str = "uwsgi",
    ) -> None:
        super().__init__(base, port)
        if wsgi_server not in ("uwsgi", "gunicorn"):
            raise ValueError(f"unknown WSGI server {wsgi_server!r}")
        self.wsgi_server = wsgi_server
        self.glance_url = glance_url
        self.with_filter = with_filter
        #: with a Keystone: auth_strategy = keystone (authtoken and
        #: keystonecontext before our filter)
        self.keystone = keystone
        self.filter_options = (
            {"glance_endpoint": glance_url}
            if filter_options is None
            else filter_options
        )

    def venv(self) -> Path:
        return ensure_venv("cinder")

    @property
    def api_url(self) -> str:
        """The v3 API root with the (noauth) test project id."""
        return f"{self.url}/v3/{PROJECT_ID}"

    @property
    def headers(self) -> dict[str, str]:
        """Headers of an admin request (noauth)."""
        return {"X-Auth-Token": f"admin:{PROJECT_ID}"}

    def prepare(self) -> None:
        for sub in ("state", "coord"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        # the directory that holds the volume_image package: the worker
        # imports the filter from the source under test
        source_root = Path(__file__).resolve().parents[2]
        values = {
            "BASE": str(self.base),
            "ETC": str(self.etc),
            "PORT": str(self.port),
            "VENV": str(self.venv()),
            "GLANCE_URL": self.glance_url,
            "PYTHONPATH": str(source_root),
            "FILTER": "store_validation" if self.with_filter else "",
            "FILTER_OPTIONS": "\n".join(
                f"{k} = {v}" for k, v in self.filter_options.items()
            ),
        }
        if self.keystone is None:
            values["AUTH"] = "noauth"
            values["AUTHTOKEN"] = ""
        else:
            values["AUTH"] = "keystone"
            values["AUTHTOKEN"] = self.keystone.authtoken_section(
                "cinder", 300
            )
        self._write_conf(values)
        _render("cinder-uwsgi.ini", self.ini, values)
        _render("cinder_gunicorn_app.py", self.etc / "cinder_app.py", values)
        _render("cinder-api-paste.ini", self.etc / "api-paste.ini", values)
        self._manage_db(
            "cinder-manage",
            "cinder.conf",
            "db",
            "sync",
            sqlite=self.base / "cinder.sqlite",
        )

    def command(self) -> list[str]:
        if self.wsgi_server == "uwsgi":
            return super().command()
        source_root = Path(__file__).resolve().parents[2]
        return [
            str(self.venv() / "bin" / "gunicorn"),
            "--bind",
            f"127.0.0.1:{self.port}",
            "--workers",
            "1",
            "--pid",
            str(self.pidfile),
            "--pythonpath",
            f"{self.etc},{source_root}",
            "--graceful-timeout",
            "5",
            "cinder_app:application",
        ]

    def _write_conf(self, values: dict[str, str]) -> None:
        """Write ``etc/cinder.conf``."""
        _render("cinder.conf", self.etc / "cinder.conf", values)

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        # our test run's "error" filter must not reach cinder's warnings
        env.pop("PYTHONWARNINGS", None)
        return env


#: the test volume driver (sparse files), see harness.filedriver
