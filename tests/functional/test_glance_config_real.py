"""``check-glance-config`` next to the real Glance 33.

Each case starts the real Glance (uWSGI, one worker) with one bad store
configuration and records what it does: refuses to start (its CRITICAL
line), starts and warns (the WARNING/ERROR lines a clean start does not
log), or starts without a word; and which stores ``GET /v2/info/stores``
then lists.  The check runs on the very glance-api.conf Glance read.  The
docs' side-by-side table is what this run measured
(``VOLUME_IMAGE_WRITE_DOCS=1`` rewrites it).

Every case sets ``[backend_defaults] filesystem_store_datadir`` to a
directory under the test's base, so that a store falling back to it
writes there and not to glance_store's default, /var/lib/glance/images.
"""

from __future__ import annotations

import dataclasses
import difflib
import io
import json
import os
import re
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from harness import launcher
from volume_image.cli import main as cli

pytestmark = pytest.mark.functional

DOC_TABLE = (
    Path(__file__).parents[2] / "doc" / "source" / "glance-config-cases.inc"
)
#: a start that fails does so in about 2 s; a good one answers in about 2 s
START_TIMEOUT = 30.0

REFUSES = "refuses to start"
WARNS = "starts, warns"
SILENT = "starts silently"

_STORES = """\
[glance_store]
default_backend = {default}

[backend_defaults]
filesystem_store_datadir = @BASE@/backend-defaults

[fast]
filesystem_store_datadir = @BASE@/stores/fast

{cheap}
[web]
store_description = Read-only HTTP store

{reserved}
{extra}
"""
_CHEAP = "[cheap]\nfilesystem_store_datadir = @BASE@/stores/cheap\n"
_RESERVED = """\
[os_glance_staging_store]
filesystem_store_datadir = @BASE@/staging

[os_glance_tasks_store]
filesystem_store_datadir = @BASE@/tasks
"""


def _config(
    *,
    backends: str = "fast:file, cheap:file, web:http",
    default: str = "fast",
    cheap: str = _CHEAP,
    reserved: str = _RESERVED,
    extra: str = "",
) -> str:
    """The stores part of glance-api.conf: the test Glance's stores with
    one thing changed.
    """
    text = _STORES.format(
        default=default, cheap=cheap, reserved=reserved, extra=extra
    )
    return f"[DEFAULT]\nenabled_backends = {backends}\n\n{text}"


@dataclasses.dataclass(frozen=True)
class Case:
    """One configuration, what Glance must do with it and which rules
    the check must report.
    """

    id: str
    title: str
    config: str
    glance: str
    rules: tuple[str, ...]


CASES = [
    Case(
        "clean",
        "the test Glance's stores: fast, cheap (file), web (http)",
        _config(),
        SILENT,
        (),
    ),
    Case(
        "same-dir-trailing-slash",
        "cheap's datadir is fast's, with a trailing slash",
        _config(
            cheap="[cheap]\nfilesystem_store_datadir = @BASE@/stores/fast/\n"
        ),
        SILENT,
        ("shared-datadir",),
    ),
    Case(
        "same-dir-dotdot",
        "cheap's datadir is fast's, spelt with ``..``",
        _config(
            cheap="[cheap]\nfilesystem_store_datadir = "
            "@BASE@/stores/cheap/../fast\n"
        ),
        SILENT,
        ("shared-datadir",),
    ),
    Case(
        "same-dir-symlink",
        "cheap's datadir is a symlink to fast's",
        _config(
            cheap="[cheap]\nfilesystem_store_datadir = @BASE@/fast-link\n"
        ),
        SILENT,
        ("shared-datadir",),
    ),
    Case(
        "nested-dir",
        "cheap's datadir is inside fast's",
        _config(
            cheap="[cheap]\nfilesystem_store_datadir = "
            "@BASE@/stores/fast/cheap\n"
        ),
        SILENT,
        ("nested-datadir",),
    ),
    Case(
        "datadirs-priorities",
        "cheap uses filesystem_store_datadirs (``c1:100``, fast's:50)",
        _config(
            cheap="[cheap]\nfilesystem_store_datadir =\n"
            "filesystem_store_datadirs = @BASE@/stores/c1:100\n"
            "filesystem_store_datadirs = @BASE@/stores/fast:50\n"
        ),
        WARNS,
        ("shared-datadir",),
    ),
    Case(
        "datadirs-and-datadir",
        "cheap sets only filesystem_store_datadirs (its datadir comes "
        "from [backend_defaults])",
        _config(
            cheap="[cheap]\nfilesystem_store_datadirs = @BASE@/stores/c1:100\n"
        ),
        WARNS,
        ("datadir-and-datadirs",),
    ),
    Case(
        "datadirs-bad-priority",
        "a filesystem_store_datadirs priority that is no integer",
        _config(
            cheap="[cheap]\nfilesystem_store_datadir =\n"
            "filesystem_store_datadirs = @BASE@/stores/c1:high\n"
        ),
        WARNS,
        ("bad-datadirs",),
    ),
    Case(
        "staging-is-a-store",
        "[os_glance_staging_store] uses fast's datadir",
        _config(
            reserved=_RESERVED.replace("@BASE@/staging", "@BASE@/stores/fast")
        ),
        SILENT,
        ("reserved-datadir-shared",),
    ),
    Case(
        "tasks-inside-a-store",
        "[os_glance_tasks_store] is inside cheap's datadir",
        _config(
            reserved=_RESERVED.replace(
                "@BASE@/tasks", "@BASE@/stores/cheap/tasks"
            )
        ),
        SILENT,
        ("reserved-datadir-shared",),
    ),
    Case(
        "reserved-datadir-missing",
        "no [os_glance_tasks_store] section",
        _config(reserved=_RESERVED.split("[os_glance_tasks_store]")[0]),
        SILENT,
        ("reserved-datadir-missing",),
    ),
    Case(
        "missing-section",
        "cheap (file) has no section",
        _config(cheap=""),
        SILENT,
        ("missing-section",),
    ),
    Case(
        "missing-sections-share",
        "cheap has no section and neither has [os_glance_tasks_store]",
        _config(
            cheap="", reserved=_RESERVED.split("[os_glance_tasks_store]")[0]
        ),
        SILENT,
        (
            "reserved-datadir-shared",
            "missing-section",
            "reserved-datadir-missing",
        ),
    ),
    Case(
        "multiple-http",
        "two http stores, web and web2",
        _config(
            backends="fast:file, cheap:file, web:http, web2:http",
            extra="[web2]\nstore_description = Another HTTP store\n",
        ),
        SILENT,
        ("multiple-http",),
    ),
    Case(
        "reserved-prefix",
        "a store named os_glance_foo",
        _config(
            backends="fast:file, cheap:file, web:http, os_glance_foo:file",
            extra="[os_glance_foo]\n"
            "filesystem_store_datadir = @BASE@/stores/foo\n",
        ),
        REFUSES,
        ("reserved-prefix",),
    ),
    Case(
        "reserved-store-enabled",
        "os_glance_staging_store listed in enabled_backends",
        _config(
            backends="fast:file, cheap:file, web:http, "
            "os_glance_staging_store:file"
        ),
        REFUSES,
        ("reserved-prefix",),
    ),
    Case(
        "no-default-backend",
        "no default_backend",
        _config(default=""),
        REFUSES,
        ("no-default-backend",),
    ),
    Case(
        "default-backend-not-enabled",
        "default_backend = nosuch",
        _config(default="nosuch"),
        REFUSES,
        ("default-backend-not-enabled",),
    ),
    Case(
        "unknown-store-type",
        "cheap has the type ``filesystem``",
        _config(backends="fast:file, cheap:filesystem, web:http"),
        WARNS,
        ("unknown-store-type",),
    ),
    Case(
        "bad-enabled-backends",
        "enabled_backends = ``fast:file, cheap``",
        _config(backends="fast:file, cheap"),
        REFUSES,
        ("bad-enabled-backends",),
    ),
    Case(
        "deprecated-dirs",
        "[task] work_dir and node_staging_uri set, as before multi-store",
        _config(
            extra="[task]\nwork_dir = @BASE@/work\n\n"
            "[DEFAULT]\nnode_staging_uri = file://@BASE@/old-staging\n"
        ),
        SILENT,
        ("deprecated-node-staging-uri", "deprecated-work-dir"),
    ),
]


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What one case measured."""

    glance: str
    detail: str
    stores: str
    rules: tuple[str, ...]
    impacts: tuple[str, ...]
    seconds: float = dataclasses.field(compare=False)


# oslo.log: "<date> <time> <pid> LEVEL logger [ctx] message"
_LOG_LINE = re.compile(
    r"^\S+ \S+ \d+ (WARNING|ERROR|CRITICAL) (\S+) (?:\[[^\]]*\] )?(.*)$"
)
_REQ = re.compile(r"req-[0-9a-f-]{36}")
_ADDR = re.compile(r"0x[0-9a-f]+")
_SITE = re.compile(r"'/[^']*/site-packages/")
#: what every start of the test Glance logs, whatever its stores: the
#: cinder driver lacks os-brick (not installed: no cinder store here),
#: and the first image request finds no schema-image.json
NOISE = (
    "No module named 'os_brick'",
    "Could not find schema properties file schema-image.json",
)


def _log_messages(server: launcher.GlanceServer) -> list[str]:
    """Glance's WARNING and worse lines, without what differs between
    runs (the base directory, request ids, addresses).
    """
    text = server.log_path.read_text(errors="replace")
    found = []
    for line in text.splitlines():
        match = _LOG_LINE.match(line)
        if not match:
            continue
        level, logger, message = match.groups()
        if message.startswith(("Traceback", " ", "File ")):
            continue
        if any(noise in message for noise in NOISE):
            continue
        message = message.replace(str(server.base), "BASE")
        message = _SITE.sub("'…/site-packages/", message)
        message = _ADDR.sub("0x…", _REQ.sub("req-…", message))
        found.append(f"{level} {logger}: {message}")
    return list(dict.fromkeys(found))


def _stores(server: launcher.GlanceServer) -> str:
    try:
        with urllib.request.urlopen(  # noqa: S310 - our own loopback Glance
            f"{server.url}/v2/info/stores", timeout=10
        ) as resp:
            doc = json.load(resp)
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    return ", ".join(
        s["id"]
        + (" (default)" if s.get("default") else "")
        + (" (read-only)" if s.get("read-only") else "")
        for s in doc["stores"]
    )


def _check(conf_path: Path) -> tuple[int, list[dict[str, str]]]:
    """The real command on the file Glance read."""
    out = io.StringIO()
    code = cli.main(
        ["check-glance-config", str(conf_path), "--format", "json"],
        out=out,
        err=io.StringIO(),
    )
    return code, json.loads(out.getvalue())["findings"]


def _run(case: Case, base: Path, database: Path | None) -> Outcome:
    t0 = time.monotonic()
    base.mkdir(parents=True)
    (base / "stores" / "fast").mkdir(parents=True)
    # the symlink case's link; harmless for the others
    (base / "fast-link").symlink_to(base / "stores" / "fast")
    if database is not None:
        shutil.copy(database, base / "glance.sqlite")
    server = launcher.GlanceServer(
        base,
        processes=1,
        stores_config=case.config,
        db_sync=database is None,
    )
    try:
        server.start(timeout=START_TIMEOUT)
    except RuntimeError:
        server.stop()  # reaps what may be left of it
        messages = _log_messages(server)
        fatal = [m for m in messages if m.startswith("CRITICAL")]
        glance, detail, stores = REFUSES, (fatal or messages or ["?"])[0], ""
    else:
        try:
            stores = _stores(server)
        finally:
            server.stop()
        messages = _log_messages(server)
        glance = WARNS if messages else SILENT
        detail = "; ".join(messages)
    code, findings = _check(server.etc / "glance-api.conf")
    assert code == (3 if findings else 0)
    return Outcome(
        glance,
        detail,
        stores,
        tuple(f["rule"] for f in findings),
        tuple(dict.fromkeys(f["impact"] for f in findings)),
        time.monotonic() - t0,
    )


@pytest.fixture(scope="module")
def measured(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Outcome]]:
    """Every case, run once, in order; the first one's database is
    copied for the others instead of a db_sync each (2 s).
    """
    root = tmp_path_factory.mktemp("glance-config")
    results: dict[str, Outcome] = {}
    first = CASES[0]
    results[first.id] = _run(first, root / first.id, None)
    database = root / first.id / "glance.sqlite"
    for case in CASES[1:]:
        results[case.id] = _run(case, root / case.id, database)
    yield results


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_glance_and_the_check(
    case: Case, measured: dict[str, Outcome]
) -> None:
    """Glance does what the docs say, and the check reports the rules
    the case breaks, and only those.
    """
    outcome = measured[case.id]
    assert outcome.glance == case.glance, outcome
    assert sorted(outcome.rules) == sorted(case.rules), outcome


def test_clean_start_and_stores(measured: dict[str, Outcome]) -> None:
    """The clean case lists the three stores; a store of an unknown
    type breaks the listing.
    """
    assert measured["clean"].stores == (
        "fast (default), cheap, web (read-only)"
    )
    # the store's section is never registered, and the listing fails
    assert measured["unknown-store-type"].stores == "HTTP 500"


def render_table(results: dict[str, Outcome]) -> str:
    """The docs' table: one row per case."""
    lines = [
        ".. This file is generated by tests/functional/"
        "test_glance_config_real.py",
        "   (VOLUME_IMAGE_WRITE_DOCS=1); do not edit.",
        "",
        ".. list-table:: What Glance 33 does, and what the check says",
        "   :header-rows: 1",
        "   :widths: 22 30 28 20",
        "",
        "   * - configuration",
        "     - what Glance does",
        "     - GET /v2/info/stores",
        "     - what the check says",
    ]
    for case in CASES:
        out = results[case.id]
        glance = out.glance
        if out.detail:
            glance += f": ``{_literal(out.detail)}``"
        check = (
            ", ".join(f"``{r}``" for r in out.rules)
            + f" ({', '.join(out.impacts)})"
            if out.rules
            else "no problem"
        )
        lines += [
            f"   * - {case.title}",
            f"     - {glance}",
            f"     - {out.stores or '(not running)'}",
            f"     - {check}",
        ]
    return "\n".join(lines) + "\n"


def _literal(text: str) -> str:
    # inline literals cannot hold a backquote; keep the cell short
    text = text.replace("`", "'")
    return text if len(text) <= 300 else text[:297] + "..."


def test_cases_table_in_docs(measured: dict[str, Outcome]) -> None:
    """The docs' table is what this run measured."""
    text = render_table(measured)
    if os.environ.get("VOLUME_IMAGE_WRITE_DOCS") == "1":
        DOC_TABLE.write_text(text)
    current = DOC_TABLE.read_text() if DOC_TABLE.exists() else ""
    diff = "".join(
        difflib.unified_diff(
            current.splitlines(True), text.splitlines(True), "docs", "measured"
        )
    )
    assert not diff, diff


def _glance_with(base: Path, case_id: str) -> launcher.GlanceServer:
    case = next(c for c in CASES if c.id == case_id)
    server = launcher.GlanceServer(
        base, processes=1, stores_config=case.config
    )
    return server.start(timeout=START_TIMEOUT)


def _upload(url: str, store: str, data: bytes) -> str:
    image = requests.post(
        f"{url}/v2/images",
        json={"name": "t", "disk_format": "raw", "container_format": "bare"},
        timeout=10,
    ).json()
    resp = requests.put(
        f"{url}/v2/images/{image['id']}/file",
        data=data,
        headers={
            "Content-Type": "application/octet-stream",
            "X-Image-Meta-Store": store,
        },
        timeout=10,
    )
    assert resp.status_code == 204, resp.text
    return str(image["id"])


def _copy(url: str, image_id: str, store: str) -> dict[str, str]:
    """copy-image to ``store``; the image once the task is over."""
    resp = requests.post(
        f"{url}/v2/images/{image_id}/import",
        json={"method": {"name": "copy-image"}, "stores": [store]},
        timeout=10,
    )
    assert resp.status_code == 202, resp.text
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        image: dict[str, str] = requests.get(
            f"{url}/v2/images/{image_id}", timeout=10
        ).json()
        # done: in the store's list, or in the failed ones
        done = image.get("stores", "").split(",") + image.get(
            "os_glance_failed_import", ""
        ).split(",")
        if store in done and not image.get("os_glance_importing_to_stores"):
            return image
        time.sleep(0.2)
    raise AssertionError(f"copy of {image_id} to {store} never ended")


def test_staging_in_a_store_loses_the_image(tmp_path: Path) -> None:
    """The data loss behind ``reserved-datadir-shared``: with the staging
    store in fast's directory, a copy-image from fast to cheap deletes
    the image's file in fast (its "staging file"), while Glance goes on
    listing fast as holding it.
    """
    server = _glance_with(tmp_path / "g", "staging-is-a-store")
    try:
        image_id = _upload(server.url, "fast", b"A" * 4096)
        in_fast = server.store_dir("fast") / image_id
        assert in_fast.exists()
        image = _copy(server.url, image_id, "cheap")
    finally:
        server.stop()
    assert image["stores"] == "fast,cheap"
    assert not in_fast.exists()


def test_shared_dir_refuses_copies(tmp_path: Path) -> None:
    """Two stores in one directory are one set of files: copy-image from
    one to the other fails ("already exists") and leaves its staging
    file behind.
    """
    server = _glance_with(tmp_path / "g", "same-dir-trailing-slash")
    try:
        image_id = _upload(server.url, "fast", b"A" * 4096)
        image = _copy(server.url, image_id, "cheap")
        log = server.log_path.read_text(errors="replace")
    finally:
        server.stop()
    assert image["stores"] == "fast"
    assert image["os_glance_failed_import"] == "cheap"
    assert f"{image_id} already exists" in log
    assert (tmp_path / "g" / "staging" / image_id).exists()


def test_store_with_both_datadirs_is_listed_but_refuses_uploads(
    tmp_path: Path,
) -> None:
    """What ``datadir-and-datadirs`` (and the other rules on which
    glance_store disables a store's writes) means: Glance lists the store
    as writable, and an upload to it answers 410.
    """
    server = _glance_with(tmp_path / "g", "datadirs-and-datadir")
    try:
        listed = _stores(server)
        image = requests.post(
            f"{server.url}/v2/images",
            json={
                "name": "t",
                "disk_format": "raw",
                "container_format": "bare",
            },
            timeout=10,
        ).json()
        resp = requests.put(
            f"{server.url}/v2/images/{image['id']}/file",
            data=b"A" * 4096,
            headers={
                "Content-Type": "application/octet-stream",
                "X-Image-Meta-Store": "cheap",
            },
            timeout=10,
        )
    finally:
        server.stop()
    assert "cheap," in listed and "cheap (read-only)" not in listed
    assert resp.status_code == 410
    assert "Adding images to store is disabled" in resp.text
