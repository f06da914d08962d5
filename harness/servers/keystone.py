"""Keystone 30 under uWSGI, with the users and roles the tests need."""

from __future__ import annotations

import grp
import os
import pwd
import subprocess
import time
from pathlib import Path
from typing import Any, ClassVar

from keystoneauth1 import session as ks_session
from keystoneauth1.identity import v3 as ks_v3

from harness.servers.base import Server, _render, ensure_venv


class KeystoneServer(Server):
    """Keystone 30 with fernet tokens and sqlite, bootstrapped with these
    users, all in domain ``default`` (see :attr:`USERS`):

    ``admin`` (admin in project ``admin``), ``demo`` (member in ``demo``),
    ``demo-reader`` (reader in ``demo``), and the service users ``glance``
    and ``cinder`` (role ``service`` in project ``service``; ``cinder`` is
    also a reader there, which is all the filter needs to list stores).

    :param token_expiration: token lifetime in seconds.  keystoneauth1
        renews a token 120 s before it expires, so below 120 s every
        request of a keystoneauth1 session authenticates again.
    """

    name = "keystone"
    ready_path = "/v3"
    REGION = "RegionOne"
    #: name -> (password, project, roles)
    USERS: ClassVar[dict[str, tuple[str, str, tuple[str, ...]]]] = {
        "admin": ("admin-pw", "admin", ("admin",)),
        "demo": ("demo-pw", "demo", ("member",)),
        "demo-reader": ("reader-pw", "demo", ("reader",)),
        "glance": ("glance-pw", "service", ("service",)),
        "cinder": ("cinder-pw", "service", ("service", "reader")),
    }

    def __init__(
        self,
        base: Path,
        port: int | None = None,
        *,
        token_expiration: int = 3600,
    ) -> None:
        super().__init__(base, port)
        self.token_expiration = token_expiration
        self.project_ids: dict[str, str] = {}

    def venv(self) -> Path:
        # Keystone shares Glance's virtualenv (see VENVS)
        return ensure_venv("glance")

    @property
    def auth_url(self) -> str:
        """The identity v3 URL clients authenticate at."""
        return f"{self.url}/v3"

    def credentials(self, user: str) -> dict[str, str]:
        """``OS_*`` variables for password auth as ``user``."""
        password, project, _ = self.USERS[user]
        return {
            "OS_AUTH_TYPE": "password",
            "OS_AUTH_URL": self.auth_url,
            "OS_USERNAME": user,
            "OS_PASSWORD": password,
            "OS_PROJECT_NAME": project,
            "OS_USER_DOMAIN_ID": "default",
            "OS_PROJECT_DOMAIN_ID": "default",
            "OS_REGION_NAME": self.REGION,
        }

    def authtoken_section(self, user: str, cache_time: int) -> str:
        """keystonemiddleware's ``[keystone_authtoken]`` for a service."""
        password, project, _ = self.USERS[user]
        return "\n".join(
            [
                "[keystone_authtoken]",
                f"www_authenticate_uri = {self.url}",
                f"auth_url = {self.url}",
                "auth_type = password",
                f"username = {user}",
                f"password = {password}",
                "user_domain_id = default",
                f"project_name = {project}",
                "project_domain_id = default",
                f"region_name = {self.REGION}",
                f"token_cache_time = {cache_time}",
                "service_token_roles = service",
                "service_token_roles_required = true",
            ]
        )

    def _manage(self, *args: str) -> tuple[str, subprocess.Popen[bytes]]:
        log = self.base / "log" / f"manage-{args[0]}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [
                    str(self.venv() / "bin" / "keystone-manage"),
                    "--config-file",
                    str(self.etc / "keystone.conf"),
                    *args,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.environment(),
            )
        return args[0], proc

    def _wait(self, *runs: tuple[str, subprocess.Popen[bytes]]) -> None:
        for name, proc in runs:
            if proc.wait():
                log = self.base / "log" / f"manage-{name}.log"
                raise RuntimeError(
                    f"keystone-manage {name} failed:\n"
                    + log.read_text(errors="replace")[-3000:]
                )

    def prepare(self) -> None:
        for sub in ("fernet-keys", "credential-keys"):
            (self.base / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
        values = {
            "BASE": str(self.base),
            "PORT": str(self.port),
            "TOKEN_EXPIRATION": str(self.token_expiration),
        }
        _render("keystone.conf", self.etc / "keystone.conf", values)
        _render("keystone-uwsgi.ini", self.ini, values)
        marker = self.base / "bootstrap.done"
        if marker.exists() and marker.read_text() == self.url:
            return
        owner = [
            "--keystone-user",
            pwd.getpwuid(os.geteuid()).pw_name,
            "--keystone-group",
            grp.getgrgid(os.getegid()).gr_name,
        ]
        # independent of each other; each costs ~3 s of imports
        self._wait(
            self._manage("db_sync"),
            self._manage("fernet_setup", *owner),
            self._manage("credential_setup", *owner),
        )
        self._wait(
            self._manage(
                "bootstrap",
                "--bootstrap-password",
                self.USERS["admin"][0],
                "--bootstrap-region-id",
                self.REGION,
                "--bootstrap-admin-url",
                self.auth_url,
                "--bootstrap-internal-url",
                self.auth_url,
                "--bootstrap-public-url",
                self.auth_url,
            )
        )
        marker.write_text(self.url)

    def environment(self) -> dict[str, str]:
        env = dict(os.environ, OS_KEYSTONE_CONFIG_DIR=str(self.etc))
        env.pop("PYTHONWARNINGS", None)
        return env

    def start(self, timeout: float = 90.0) -> KeystoneServer:
        super().start(timeout)
        t0 = time.monotonic()
        self._create_identities()
        self.startup_seconds += time.monotonic() - t0
        return self

    def session(
        self, user: str = "admin", timeout: float = 60.0
    ) -> ks_session.Session:
        """A keystoneauth1 session with password auth as ``user``."""
        password, project, _ = self.USERS[user]
        auth = ks_v3.Password(
            auth_url=self.auth_url,
            username=user,
            password=password,
            project_name=project,
            user_domain_id="default",
            project_domain_id="default",
        )
        return ks_session.Session(auth=auth, timeout=timeout)

    def _identity(self, sess: Any, method: str, path: str, **kw: Any) -> Any:
        resp = sess.request(
            path,
            method,
            endpoint_filter={"service_type": "identity"},
            raise_exc=True,
            **kw,
        )
        return resp.json() if resp.content else None

    def _find_or_create(
        self, sess: Any, coll: str, name: str, body: dict[str, Any]
    ) -> str:
        found = self._identity(sess, "GET", f"/{coll}?name={name}")[coll]
        if found:
            return str(found[0]["id"])
        key = coll[:-1]
        made = self._identity(sess, "POST", f"/{coll}", json={key: body})
        return str(made[key]["id"])

    def _create_identities(self) -> None:
        sess = self.session(timeout=30)
        roles = {
            r["name"]: r["id"]
            for r in self._identity(sess, "GET", "/roles")["roles"]
        }
        for user, (password, project, user_roles) in self.USERS.items():
            pid = self._find_or_create(
                sess,
                "projects",
                project,
                {"name": project, "domain_id": "default"},
            )
            self.project_ids[project] = pid
            if user == "admin":
                continue
            uid = self._find_or_create(
                sess,
                "users",
                user,
                {
                    "name": user,
                    "password": password,
                    "domain_id": "default",
                    "default_project_id": pid,
                },
            )
            for role in user_roles:
                self._identity(
                    sess,
                    "PUT",
                    f"/projects/{pid}/users/{uid}/roles/{roles[role]}",
                )

    def register_service(self, service_type: str, name: str, url: str) -> None:
        """Put a service's public and internal endpoint in the catalog
        (replacing what an earlier run registered).
        """
        sess = self.session(timeout=30)
        sid = self._find_or_create(
            sess, "services", name, {"name": name, "type": service_type}
        )
        endpoints = self._identity(
            sess, "GET", f"/endpoints?service_id={sid}"
        )["endpoints"]
        for endpoint in endpoints:
            self._identity(sess, "DELETE", f"/endpoints/{endpoint['id']}")
        for interface in ("public", "internal"):
            self._identity(
                sess,
                "POST",
                "/endpoints",
                json={
                    "endpoint": {
                        "service_id": sid,
                        "interface": interface,
                        "url": url,
                        "region_id": self.REGION,
                    }
                },
            )
