"""The extra-spec writes that are sent to upstream cinder-api and to the
same cinder-api with our filter, and the table the docs show of both.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import urllib.parse
from collections.abc import Callable
from typing import Any

import requests

from harness import launcher

KEY = "image_service:store_id"
_names = itertools.count()


class CinderApi:
    """A few volume-type calls against a (noauth) cinder-api."""

    def __init__(self, server: launcher.CinderServer) -> None:
        self.server = server
        self.root = server.api_url
        self.headers = dict(server.headers)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        raw: bytes | None = None,
    ) -> requests.Response:
        headers = dict(self.headers, **{"Content-Type": "application/json"})
        data = (
            raw
            if raw is not None
            else (None if body is None else json.dumps(body).encode())
        )
        return requests.request(
            method, self.root + path, data=data, headers=headers, timeout=60
        )

    def create_type(self, specs: dict[str, Any] | None = None) -> str:
        body: dict[str, Any] = {"name": f"t{next(_names)}"}
        if specs:
            body["extra_specs"] = specs
        resp = self.request("POST", "/types", {"volume_type": body})
        assert resp.status_code == 200, resp.text
        return str(resp.json()["volume_type"]["id"])

    def specs(self, type_id: str) -> dict[str, Any]:
        resp = self.request("GET", f"/types/{type_id}/extra_specs")
        assert resp.status_code == 200, resp.text
        return dict(resp.json()["extra_specs"])

    def type_names(self) -> set[str]:
        resp = self.request("GET", "/types?is_public=None")
        assert resp.status_code == 200, resp.text
        return {t["name"] for t in resp.json()["volume_types"]}


def _rst_text(text: str) -> str:
    """``text`` as plain reStructuredText (wraps, unlike a literal)."""
    for char in ("\\", "*", "`", "|", "_"):
        text = text.replace(char, "\\" + char)
    return text


@dataclasses.dataclass(frozen=True)
class Outcome:
    status: int
    message: str
    stored: bool
    glance_calls: int

    def cell(self) -> str:
        text = f"**{self.status}**"
        if self.message:
            text += f" \u201c{_rst_text(self.message)}\u201d"
        text += "; stored" if self.stored else "; nothing stored"
        text += f"; {self.glance_calls} Glance call"
        return text + ("" if self.glance_calls == 1 else "s")


@dataclasses.dataclass(frozen=True)
class Case:
    """One write: ``kind`` picks the route and the body shape.

    * ``specs``: ``POST /types/{id}/extra_specs`` with ``{"extra_specs":
      body}`` on a type that has ``image_service:store_id=fast``;
    * ``key``: ``PUT /types/{id}/extra_specs/{url_key}`` with ``body``,
      on the same kind of type;
    * ``inline``: ``POST /types`` with ``body`` as the inline extra specs;
    * ``raw``: ``POST /types/{id}/extra_specs`` with ``raw`` bytes.
    """

    name: str
    kind: str
    body: Any = None
    url_key: str = KEY
    raw: bytes | None = None
    expect: int = 400
    fragment: str = ""

    def request_text(self) -> str:
        if self.kind == "inline":
            return f"POST /types, inline ``{json.dumps(self.body)}``"
        if self.kind == "key":
            return (
                f"PUT .../extra_specs/{self.url_key} "
                f"``{json.dumps(self.body)}``"
            )
        if self.kind == "raw":
            assert self.raw is not None
            return f"POST .../extra_specs ``{self.raw.decode()}``"
        return f"POST .../extra_specs ``{json.dumps(self.body)}``"


def run_case(
    api: CinderApi, case: Case, store_calls: Callable[[], int]
) -> Outcome:
    """Send ``case`` and find out what the server stored."""
    if case.kind == "inline":
        name = f"inline{next(_names)}"
        before_calls = store_calls()
        resp = api.request(
            "POST",
            "/types",
            {"volume_type": {"name": name, "extra_specs": case.body}},
        )
        stored = name in api.type_names()
    else:
        type_id = api.create_type({KEY: "fast"})
        before = api.specs(type_id)
        before_calls = store_calls()
        if case.kind == "key":
            resp = api.request(
                "PUT",
                f"/types/{type_id}/extra_specs/"
                + urllib.parse.quote(case.url_key, safe=""),
                case.body,
            )
        elif case.kind == "raw":
            resp = api.request(
                "POST", f"/types/{type_id}/extra_specs", raw=case.raw
            )
        else:
            resp = api.request(
                "POST",
                f"/types/{type_id}/extra_specs",
                {"extra_specs": case.body},
            )
        calls = store_calls() - before_calls
        stored = api.specs(type_id) != before
        return Outcome(resp.status_code, message_of(resp), stored, calls)
    return Outcome(
        resp.status_code,
        message_of(resp),
        stored,
        store_calls() - before_calls,
    )


def message_of(resp: requests.Response) -> str:
    if resp.status_code == 200:
        return ""
    try:
        doc = resp.json()
        (fault,) = doc.values()
        return str(fault["message"])
    except (ValueError, TypeError, KeyError, AttributeError):
        return resp.text.strip()[:200]


CASES = [
    Case("unknown store", "specs", {KEY: "nosuch"}, fragment="no store"),
    Case(
        "unknown store, inline in POST /types",
        "inline",
        {KEY: "nosuch"},
        fragment="no store",
    ),
    Case(
        "unknown store, PUT of one key",
        "key",
        {KEY: "nosuch"},
        fragment="no store",
    ),
    Case(
        "key in another case",
        "specs",
        {"Image_Service:Store_Id": "nosuch"},
        fragment="lower-case",
    ),
    Case(
        "key in another case, valid store, PUT",
        "key",
        {"Image_Service:Store_Id": "cheap"},
        url_key="Image_Service:Store_Id",
        fragment="lower-case",
    ),
    Case(
        "mistyped key",
        "specs",
        {"image_service:stor_id": "cheap"},
        fragment="Did you mean",
    ),
    Case("read-only store", "specs", {KEY: "web"}, fragment="read-only"),
    Case(
        "reserved store",
        "specs",
        {KEY: "os_glance_staging_store"},
        fragment="reserved",
    ),
    Case("empty value", "specs", {KEY: ""}, fragment="empty"),
    Case("value with a space", "specs", {KEY: "cheap store"}),
    Case("leading space", "specs", {KEY: " cheap"}, fragment="whitespace"),
    Case("wrong case of the store", "specs", {KEY: "CHEAP"}, fragment="cheap"),
    Case("null value", "specs", {KEY: None}, fragment="string"),
    Case("valid store", "specs", {KEY: "cheap"}, expect=200),
    Case("valid store, PUT of one key", "key", {KEY: "cheap"}, expect=200),
    Case("valid store, inline", "inline", {KEY: "cheap"}, expect=200),
    Case(
        "no image_service spec",
        "specs",
        {"volume_backend_name": "lvm"},
        expect=200,
    ),
    Case(
        "malformed JSON (left to Cinder)",
        "raw",
        raw=b'{"extra_specs": {',
        fragment="",
    ),
]

#: the read-only flag sent as a JSON boolean by the store list
BOOLEAN_CASES = [
    Case(
        "read-only store, flag as JSON boolean",
        "specs",
        {KEY: "web"},
        fragment="read-only",
    ),
]

#: with Glance unreachable
DOWN_CASES = [
    Case(
        "valid store, Glance down",
        "specs",
        {KEY: "cheap"},
        expect=503,
        fragment="unavailable",
    ),
    Case(
        "no image_service spec, Glance down",
        "specs",
        {"volume_backend_name": "lvm"},
        expect=200,
    ),
]


def render_table(rows: list[tuple[Case, Outcome, Outcome]]) -> str:
    """The reStructuredText table of the docs."""
    out = [
        ".. list-table::",
        "   :header-rows: 1",
        "   :widths: 20 25 27 28",
        "",
        "   * - case",
        "     - request",
        "     - upstream cinder-api 29",
        "     - with the store_validation filter",
    ]
    for case, upstream, ours in rows:
        out += [
            f"   * - {case.name}",
            f"     - {case.request_text()}",
            f"     - {upstream.cell()}",
            f"     - {ours.cell()}",
        ]
    return "\n".join(out) + "\n"
