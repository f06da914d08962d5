"""A small client of the Cinder volume API v3 for the tests, with noauth
headers (``X-Auth-Token: admin:<project>``), as the test stacks run it.

It does what a test needs and nothing more: volume types with extra
specs, volumes on a chosen backend, ``os-volume_upload_image``, user
messages, and waiting for a status.  :func:`parse_table` reads the
tables that the real ``cinder`` command prints (see
:meth:`harness.launcher.CinderStack.cli`).
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import requests

__all__ = ["CinderRest", "CinderRestError", "parse_table"]

_names = itertools.count()


class CinderRestError(RuntimeError):
    """An unexpected answer, or a wait that ran out of time."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class CinderRest:
    """Admin requests to the cinder-api at ``url`` (its root) as project
    ``project_id``.

    :param microversion: sent as ``OpenStack-API-Version: volume X``; 3.3
        is the lowest that lists user messages, and lets uploads set
        ``visibility``.
    """

    def __init__(
        self,
        url: str,
        project_id: str,
        *,
        microversion: str = "3.3",
        timeout: float = 60.0,
        token: str | None = None,
    ) -> None:
        self.root = f"{url.rstrip('/')}/v3/{project_id}"
        self.project_id = project_id
        #: a Keystone token; None: noauth's "admin:<project>"
        self.token = token
        self.microversion = microversion
        self.timeout = timeout

    @property
    def headers(self) -> dict[str, str]:
        """Headers of a request: the token, or noauth's admin."""
        return {
            "X-Auth-Token": self.token or f"admin:{self.project_id}",
            "OpenStack-API-Version": f"volume {self.microversion}",
        }

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        microversion: str | None = None,
    ) -> requests.Response:
        """One request; the caller checks the answer."""
        headers = self.headers
        if microversion is not None:
            headers["OpenStack-API-Version"] = f"volume {microversion}"
        return requests.request(
            method,
            self.root + path,
            json=body,
            headers=headers,
            timeout=self.timeout,
        )

    def call(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        """A request that must succeed (2xx); its JSON body or None.

        :raises CinderRestError: any other status.
        """
        resp = self.request(method, path, body, **kw)
        if not resp.ok:
            raise CinderRestError(
                f"{method} {path}: {resp.status_code} {resp.text[:1000]}",
                resp.status_code,
            )
        return resp.json() if resp.content else None

    # --- volume types -------------------------------------------------
    def create_type(
        self,
        name: str | None = None,
        extra_specs: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Create a volume type, its extra specs inline.

        Upstream's API checks ``image_service:store_id`` only on the
        extra_specs endpoints, not inline specs of ``POST /types``: on an
        API without our ``store_validation`` filter (which checks both),
        this is how a test puts a spec that would be refused (a read-only
        or removed store) onto a type.
        """
        body: dict[str, Any] = {
            "name": name or f"vi-type-{time.time_ns()}-{next(_names)}"
        }
        if extra_specs:
            body["extra_specs"] = extra_specs
        made = self.call("POST", "/types", {"volume_type": body})
        return dict(made["volume_type"])

    def find_type(self, name: str) -> dict[str, Any] | None:
        """The volume type named ``name``, or None."""
        types = self.call("GET", "/types?is_public=None")["volume_types"]
        for vtype in types:
            if vtype["name"] == name:
                return dict(vtype)
        return None

    def backend_type(
        self, backend: str, extra_specs: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """A new type whose volumes go to ``backend`` (its
        ``volume_backend_name``), with more ``extra_specs``.
        """
        specs = {"volume_backend_name": backend, **(extra_specs or {})}
        return self.create_type(extra_specs=specs)

    def delete_type(self, type_id: str) -> None:
        self.call("DELETE", f"/types/{type_id}")

    # --- volumes --------------------------------------------------------
    def create_volume(
        self,
        size_gib: int = 1,
        *,
        volume_type: str | None = None,
        name: str | None = None,
    ) -> dict[str, Any]:
        """Ask for a volume (``volume_type``: a type id or name); it is
        ``creating`` at first: see :meth:`wait_volume`.
        """
        body: dict[str, Any] = {
            "size": size_gib,
            "name": name or f"vi-volume-{next(_names)}",
        }
        if volume_type is not None:
            body["volume_type"] = volume_type
        return dict(self.call("POST", "/volumes", {"volume": body})["volume"])

    def get_volume(self, volume_id: str) -> dict[str, Any]:
        return dict(self.call("GET", f"/volumes/{volume_id}")["volume"])

    def wait_volume(
        self,
        volume_id: str,
        *statuses: str,
        timeout: float = 120.0,
        interval: float = 0.3,
    ) -> dict[str, Any]:
        """Wait until the volume is in one of ``statuses`` (default
        ``available``); return it.

        :raises CinderRestError: it went to ``error`` (unless that is
            waited for) or the time ran out.
        """
        wanted = set(statuses or ("available",))
        deadline = time.monotonic() + timeout
        while True:
            volume = self.get_volume(volume_id)
            status = volume["status"]
            if status in wanted:
                return volume
            if status.startswith("error"):
                raise CinderRestError(
                    f"volume {volume_id} is {status!r}, "
                    f"not {'/'.join(sorted(wanted))}"
                )
            if time.monotonic() > deadline:
                raise CinderRestError(
                    f"volume {volume_id} still {status!r} after {timeout}s"
                )
            time.sleep(interval)

    def wait_volume_leaves(
        self,
        volume_id: str,
        status: str = "uploading",
        timeout: float = 300.0,
        interval: float = 0.3,
    ) -> dict[str, Any]:
        """Wait until the volume is no longer ``status``; return it (an
        upload ends ``available`` whether it worked or not).
        """
        deadline = time.monotonic() + timeout
        while True:
            volume = self.get_volume(volume_id)
            if volume["status"] != status:
                return volume
            if time.monotonic() > deadline:
                raise CinderRestError(
                    f"volume {volume_id} still {status!r} after {timeout}s"
                )
            time.sleep(interval)

    def delete_volume(
        self, volume_id: str, *, wait: bool = True, timeout: float = 120.0
    ) -> None:
        """Delete a volume; with ``wait``, return once it is gone."""
        self.call("DELETE", f"/volumes/{volume_id}")
        if wait:
            self._wait_gone("volume", volume_id, timeout)

    def _wait_gone(self, kind: str, ident: str, timeout: float) -> None:
        """Wait until ``/{kind}s/{ident}`` answers 404.

        :raises CinderRestError: it went to an error state, or the time
            ran out.
        """
        deadline = time.monotonic() + timeout
        while True:
            resp = self.request("GET", f"/{kind}s/{ident}")
            if resp.status_code == 404:
                return
            if resp.ok and resp.json()[kind]["status"].startswith("error"):
                raise CinderRestError(
                    f"{kind} {ident}: {resp.json()[kind]['status']}"
                )
            if time.monotonic() > deadline:
                raise CinderRestError(f"{kind} {ident} not deleted")
            time.sleep(0.3)

    def extend_volume(self, volume_id: str, new_size_gib: int) -> None:
        """``os-extend``; the volume is ``extending`` until done."""
        self.call(
            "POST",
            f"/volumes/{volume_id}/action",
            {"os-extend": {"new_size": new_size_gib}},
        )

    def create_snapshot(self, volume_id: str) -> dict[str, Any]:
        """Ask for a snapshot of the volume; wait with
        :meth:`wait_snapshot`.
        """
        body = {"volume_id": volume_id, "name": f"vi-snap-{next(_names)}"}
        return dict(
            self.call("POST", "/snapshots", {"snapshot": body})["snapshot"]
        )

    def wait_snapshot(
        self, snapshot_id: str, timeout: float = 120.0
    ) -> dict[str, Any]:
        """Wait until the snapshot is ``available``; return it."""
        deadline = time.monotonic() + timeout
        while True:
            snap = self.call("GET", f"/snapshots/{snapshot_id}")["snapshot"]
            if snap["status"] == "available":
                return dict(snap)
            if snap["status"].startswith("error") or (
                time.monotonic() > deadline
            ):
                raise CinderRestError(
                    f"snapshot {snapshot_id} is {snap['status']!r}"
                )
            time.sleep(0.3)

    def delete_snapshot(
        self, snapshot_id: str, timeout: float = 120.0
    ) -> None:
        """Delete a snapshot; return once it is gone."""
        self.call("DELETE", f"/snapshots/{snapshot_id}")
        self._wait_gone("snapshot", snapshot_id, timeout)

    def upload_to_image(
        self,
        volume_id: str,
        image_name: str,
        *,
        disk_format: str = "raw",
        container_format: str = "bare",
        force: bool = False,
        **extra: Any,
    ) -> str:
        """``os-volume_upload_image``; return the new image's id.

        The API answers once Glance has a ``queued`` image; the volume is
        ``uploading`` until the volume service is done: see
        :meth:`wait_volume_leaves`.  ``extra``: more fields of the action
        (``visibility``, ``protected``).
        """
        body = {
            "os-volume_upload_image": {
                "image_name": image_name,
                "disk_format": disk_format,
                "container_format": container_format,
                "force": force,
                **extra,
            }
        }
        done = self.call("POST", f"/volumes/{volume_id}/action", body)
        return str(done["os-volume_upload_image"]["image_id"])

    # --- messages, services -------------------------------------------
    def messages(self, resource_uuid: str | None = None) -> list[Any]:
        """User messages (microversion 3.3 at least), in the API's
        order; only those about ``resource_uuid`` when given.
        """
        found = self.call(
            "GET",
            "/messages",
            microversion=max_version(self.microversion, "3.3"),
        )["messages"]
        return [
            m
            for m in found
            if resource_uuid is None or m.get("resource_uuid") == resource_uuid
        ]

    def services(self) -> list[Any]:
        """``GET /os-services``: binary, host, state (up/down), status."""
        return list(self.call("GET", "/os-services")["services"])


def max_version(a: str, b: str) -> str:
    """The higher of two microversions ``3.N``."""

    def key(v: str) -> tuple[int, ...]:
        return tuple(int(p) for p in v.split("."))

    return max(a, b, key=key)


def parse_table(text: str) -> dict[str, str]:
    """The ``| Property | Value |`` table a ``cinder`` command prints, as
    a dict (first column -> second).
    """
    table: dict[str, str] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) >= 2:
            table.setdefault(cells[0], cells[1])
    return table
