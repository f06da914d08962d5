"""``volume-image``: check stores and extra specs, and upload volumes.

The host tool; ``validate`` and ``audit`` are also ``openstack volume
type store ...`` commands (:mod:`volume_image.cli.osc`), and both run
:mod:`volume_image.cli.commands` on a session from
:mod:`volume_image.clients.connection`.

Global options (authentication, ``--config-file``, ``--debug``) come
before the subcommand, as with ``openstack``, and mean the same::

    volume-image --os-auth-type none --os-endpoint URL stores
    volume-image validate image_service:store_id=cheap volume_backend_name=lvm
    volume-image audit --from-file types.json

Exit codes: 0 success, 2 usage error, 3 invalid extra spec or a store
named on a Glance without multi-store (for ``audit``, a broken volume
type; for ``check-glance-config``, a problem in Glance's configuration),
4 service error (Glance or the block-storage API unreachable,
authentication, bad answer, a deadline passed), 5 failed upload, 6
uploaded but not verified, 130/143 upload cancelled by SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TextIO, TypeAlias

from keystoneauth1 import exceptions as ks_exc
from oslo_config import cfg

from volume_image import config, errors
from volume_image.cli import commands
from volume_image.clients import connection, glance
from volume_image.core import deadline, placement, specs, sweep
from volume_image.core.text import printable
from volume_image.pipeline import records

if TYPE_CHECKING:
    from volume_image.pipeline.uploader import UploadResult

__all__ = [
    "EXIT_GLANCE",
    "EXIT_OK",
    "EXIT_SPEC",
    "EXIT_UNVERIFIED",
    "EXIT_USAGE",
    "build_parser",
    "main",
]

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_SPEC = 3
EXIT_GLANCE = 4
#: uploaded, but Glance could not be asked to verify it: kept unverified
EXIT_UNVERIFIED = 6

PROG = "volume-image"


#: bad command-line input found after argparse
UsageError = commands.UsageError

_NO_CLOUD_CONFIG = object()

_Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def build_parser(
    argv: Sequence[str] = (), *, cloud_config: Any = _NO_CLOUD_CONFIG
) -> argparse.ArgumentParser:
    """The command line's parser (the docs render its help).

    :param argv: the arguments about to be parsed: the options of the
        ``--os-auth-type`` (or cloud) they name are added.
    :param cloud_config: openstacksdk's loader
        (:func:`volume_image.clients.connection.cloud_config`), None without
        openstacksdk; by default a new one.
    :raises volume_image.clients.connection.ConfigError: no such cloud, or a
        broken clouds.yaml.
    """
    if cloud_config is _NO_CLOUD_CONFIG:
        cloud_config = connection.cloud_config()
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Check Glance stores and image_service:store_id extra "
        "specs, and upload volumes to Glance stores.",
        epilog="Exit codes: 0 success, 2 usage error, 3 invalid extra "
        "spec or broken volume type, 4 Glance or block-storage API error, "
        "5 failed upload, 6 uploaded but not verified, 130/143 upload "
        "cancelled by SIGINT/SIGTERM.",
    )
    parser.add_argument(
        "--config-file",
        metavar="PATH",
        action="append",
        default=[],
        help="oslo.config file with [glance] and [volume_image] sections; "
        "used for the Glance connection when neither --os-cloud nor "
        "--os-auth-type (nor --os-auth-url) is given. Repeatable.",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show tracebacks and log HTTP requests",
    )
    # openstack's options, read by openstacksdk's loader: --os-cloud
    # (clouds.yaml), OS_* variables and --os-* flags, flags winning
    connection.register_argparse_arguments(parser, argv, cloud_config)

    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    _add_stores(sub)
    _add_validate(sub)
    _add_audit(sub)
    _add_sweep(sub)
    _add_upload(sub)
    _add_check_glance_config(sub)
    return parser


def _add_stores(sub: _Subparsers) -> None:
    p = sub.add_parser(
        "stores",
        help="list Glance's stores",
        description="List the stores Glance offers (GET /v2/info/stores; "
        "type and weight when the caller may read /detail).",
    )
    _add_format(p)
    p.set_defaults(func=cmd_stores)


def _add_validate(sub: _Subparsers) -> None:
    p = sub.add_parser(
        "validate",
        help="check a set of extra specs",
        description="Check volume-type extra specs the way the API hook "
        "does. Exit 3 when they are invalid.",
    )
    p.add_argument(
        "specs",
        nargs="+",
        metavar="KEY=VALUE",
        help="an extra spec, e.g. image_service:store_id=cheap",
    )
    _add_format(p)
    p.set_defaults(func=cmd_validate)


def _add_audit(sub: _Subparsers) -> None:
    p = sub.add_parser(
        "audit",
        help="check every volume type against Glance's stores",
        description="Check the image_service: extra specs of every volume "
        "type against the live store list, with one Glance request. Run "
        "it after changing Glance's stores. The types come from the "
        "block-storage API (service type block-storage, with the same "
        "credentials; listing private types needs the admin role) or from "
        "a file. Exit 3 when any type is broken.",
    )
    source = p.add_mutually_exclusive_group()
    source.add_argument(
        "--from-file",
        metavar="PATH",
        help="read the types from PATH ('-' for stdin): the API's "
        '{"volume_types": [...]} answer, or the output of '
        "'openstack volume type list --long -f json'",
    )
    source.add_argument(
        "--block-storage-endpoint",
        metavar="URL",
        help="the block-storage API root with the project id, e.g. "
        "https://cinder.example/v3/PROJECT_ID, instead of the service "
        "catalog's",
    )
    _add_format(p)
    p.set_defaults(func=cmd_audit)


def _add_sweep(sub: _Subparsers) -> None:
    p = sub.add_parser(
        "sweep",
        help="find (and delete) images that killed uploads left behind",
        description="List the images that uploads on this host created "
        "(each has an upload record here, under conversion_dir) and "
        "whose upload process is gone, while the image is still queued, "
        "saving or killed and was created longer ago than --older-than. "
        "A live upload holds its record's lock and is never listed. "
        "Image properties alone are never trusted. With --host, also "
        "the images a host that is gone made in the caller's project. "
        "With --delete, delete them. Glance never cleans these itself. "
        "Images Cinder's API created are never touched.",
    )
    p.add_argument(
        "--older-than",
        dest="older_than_given",
        metavar="AGE",
        help="minimum age since creation: seconds, or a number with s, "
        "m, h or d (default: 1h; required with --host)",
    )
    p.add_argument(
        "--host",
        help="also the images made on HOST, another host that is gone "
        "(its uploads cannot be checked from here)",
    )
    p.add_argument(
        "--delete", action="store_true", help="delete what is found"
    )
    _add_format(p)
    p.set_defaults(func=cmd_sweep)


def _add_upload(sub: _Subparsers) -> None:
    p = sub.add_parser(
        "upload",
        help="upload a volume to a Glance image",
        description="Stream a volume (file or block device) to the store "
        "its volume type names, or to Glance's default store, then verify "
        "what Glance stored. The exit code says what failed, as for every "
        "command: 3 the store named is invalid, 4 Glance could not be "
        "asked or refused the upload (unreachable, died mid-way, 5xx, "
        "authentication), 5 the upload itself failed (source, "
        "conversion, integrity, quota, format), 6 uploaded but not "
        "verified, 130/143 cancelled by SIGINT/SIGTERM. On 4 and 5 the "
        "image the upload created is deleted, or the message names it.",
    )
    p.add_argument("path", metavar="PATH", help="volume file or block device")
    p.add_argument("--name", help="image name (required without --image-id)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--store-id", metavar="ID", help="the target store")
    where.add_argument(
        "--extra-spec",
        metavar="KEY=VALUE",
        action="append",
        help="a volume-type extra spec; image_service:store_id names the "
        "store. Repeatable.",
    )
    _add_image_options(p)
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show a progress bar (default: when stderr is a terminal)",
    )
    _add_format(p)
    p.set_defaults(func=cmd_upload)


def _add_image_options(p: argparse.ArgumentParser) -> None:
    """``upload``'s options for the image: its formats, the image to
    fill, co-location and properties.
    """
    p.add_argument(
        "--disk-format",
        default="raw",
        help="image disk_format; other than the source format means a "
        "qemu-img conversion (default: raw)",
    )
    p.add_argument(
        "--container-format",
        default="bare",
        help="image container_format; 'compressed' gzips (default: bare)",
    )
    p.add_argument(
        "--source-format",
        default="raw",
        help="format of the volume itself (default: raw)",
    )
    p.add_argument(
        "--image-id",
        metavar="ID",
        type=_image_id,
        help="fill this existing 'queued' image instead of creating one",
    )
    p.add_argument(
        "--base-image",
        metavar="ID",
        type=_image_id,
        help="the image the volume was created from: when no store is "
        "named, the new image goes to every writable store holding it "
        "(uploaded to one, copied to the others with Glance's "
        "copy-image; copies use the [volume_image_copy] credentials of "
        "--config-file when set). An explicit store wins",
    )
    p.add_argument(
        "--strict-colocation",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="with --base-image: fail (exit 5, image deleted) when a "
        "store was not copied, also when not permitted (default: "
        "[volume_image] colocate_strict)",
    )
    p.add_argument(
        "--property",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="an image property. Repeatable.",
    )


def _add_check_glance_config(sub: _Subparsers) -> None:
    p = sub.add_parser(
        "check-glance-config",
        help="check a Glance multi-store configuration",
        description="Check glance-api.conf (and the files of each "
        "--config-dir, read after PATHs, as Glance reads them) for "
        "multi-store mistakes Glance accepts or reports only at start: "
        "shared or nested store directories, reserved stores, the "
        "default store, missing sections, unknown store types. Reads "
        "the files only; Glance need not run. Exit 3 when a problem is "
        "found.",
    )
    p.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="a config file, e.g. /etc/glance/glance-api.conf; later ones win",
    )
    p.add_argument(
        "--config-dir",
        metavar="DIR",
        action="append",
        default=[],
        help="a directory whose *.conf files are read in sorted order "
        "after the PATHs, e.g. /etc/glance/glance-api.conf.d. Repeatable.",
    )
    _add_format(p)
    p.set_defaults(func=cmd_check_glance_config)


def _image_id(text: str) -> str:
    """An argparse type: a Glance image id (a UUID), nothing else."""
    if not placement.is_image_id(text):
        raise argparse.ArgumentTypeError(
            f"{ascii(text)[:80]} is not an image id (a UUID such as "
            "0f0e0d0c-0b0a-4909-8807-060504030201)"
        )
    return text


def _add_format(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-f",
        "--format",
        choices=("table", "json"),
        default="table",
        help="output format (default: table)",
    )


class Context:
    """What a subcommand needs: the parsed arguments, the configuration
    and lazily built Glance objects.
    """

    def __init__(
        self,
        args: argparse.Namespace,
        conf: cfg.ConfigOpts,
        out: TextIO,
        err: TextIO,
        *,
        argv: Sequence[str] = (),
        cloud_config: Any = None,
    ) -> None:
        self.args = args
        self.conf = conf
        self.out = out
        self.err = err
        self.argv = list(argv)
        self.cloud_config = cloud_config
        self.settings = config.Settings.from_conf(conf)
        self._connection: connection.Connection | None = None
        self._client: glance.GlanceClient | None = None

    @property
    def connection(self) -> connection.Connection:
        """The session and services: a cloud, the --os-* flags, the
        config file, or a token-less Glance.
        """
        if self._connection is None:
            self._connection = _connection(self)
        return self._connection

    @property
    def client(self) -> glance.GlanceClient:
        """The Glance client on :attr:`connection`."""
        if self._client is None:
            self._client = self.connection.glance(self.settings)
        return self._client

    def print(self, text: str = "") -> None:
        """Print human-readable output; control characters (from a
        server's answer) are shown escaped, line by line.
        """
        print(
            "\n".join(printable(line) for line in text.split("\n")),
            file=self.out,
        )

    def print_json(self, doc: Any) -> None:
        json.dump(doc, self.out, indent=2, sort_keys=True)
        self.out.write("\n")


def _auth_given(argv: Sequence[str]) -> bool:
    """Whether the user asked for Keystone authentication: an auth type
    or an auth URL, as a flag or in the environment (openstack's default
    auth type is ``password``, so argparse's value cannot tell).
    """
    peek = argparse.ArgumentParser(add_help=False)
    peek.add_argument("--os-auth-type", default=os.environ.get("OS_AUTH_TYPE"))
    peek.add_argument("--os-auth-url", default=os.environ.get("OS_AUTH_URL"))
    known, _ = peek.parse_known_args(list(argv))
    return bool(known.os_auth_type or known.os_auth_url)


def _connection(ctx: Context) -> connection.Connection:
    """Where to connect, in this order: ``--os-cloud``; ``--os-auth-type``
    or ``--os-auth-url`` (flags or ``OS_*``); ``--config-file``; a
    token-less Glance at ``--os-endpoint-override``.
    """
    args = ctx.args
    cloud = args.os_cloud or None
    try:
        if cloud or _auth_given(ctx.argv):
            return connection.load(args, ctx.cloud_config, cloud=cloud)
        if args.config_file:
            return connection.from_conf(ctx.conf)
        endpoint = args.os_endpoint_override or getattr(
            args, "os_image_endpoint_override", None
        )
        if endpoint:
            return connection.tokenless(args, endpoint)
    except connection.ConfigError as exc:
        raise UsageError(str(exc)) from exc
    except ks_exc.ClientException as exc:
        raise errors.GlanceAuthError(
            f"cannot set up authentication: {exc}"
        ) from exc
    raise UsageError(
        "no Glance to ask: give --os-cloud (clouds.yaml), --os-auth-type "
        "(or OS_AUTH_TYPE, e.g. 'password' with OS_AUTH_URL..., or 'none' "
        "with --os-endpoint URL), or --config-file with a [glance] section"
    )


def _table(rows: list[list[str]], headers: list[str]) -> str:
    # cells may hold what a server sent: never raw control characters
    rows = [[printable(str(c)) for c in row] for row in rows]
    widths = [
        max(len(str(c)) for c in col)
        for col in zip(headers, *rows, strict=False)
    ]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            str(c).ljust(w) for c, w in zip(cells, widths, strict=True)
        ).rstrip()

    out = [line(headers), line(["-" * w for w in widths])]
    out.extend(line(r) for r in rows)
    return "\n".join(out)


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def cmd_stores(ctx: Context) -> int:
    """``stores``: list what Glance offers."""
    catalog = ctx.client.get_store_catalog()
    if not catalog.multistore:
        raise errors.MultiStoreDisabled(
            "this Glance runs without multi-store (GET /v2/info/stores "
            "answered 404): image_service:store_id cannot be honoured "
            "there; enable enabled_backends in Glance or leave the spec "
            "unset",
            endpoint=ctx.client.endpoint,
        )
    if ctx.args.format == "json":
        ctx.print_json(
            {
                "detailed": catalog.detailed,
                "stores": [s.as_dict() for s in catalog.stores],
            }
        )
        return EXIT_OK
    headers = ["id", "default", "read-only", "description"]
    if catalog.detailed:
        headers += ["type", "weight"]
    rows = []
    for s in catalog.stores:
        row = [s.id, _yes(s.default), _yes(s.read_only), s.description]
        if catalog.detailed:
            row += [s.type or "", "" if s.weight is None else f"{s.weight:g}"]
        rows.append(row)
    ctx.print(_table(rows, headers))
    return EXIT_OK


def cmd_validate(ctx: Context) -> int:
    """``validate``: check a whole extra-spec set."""
    extra = commands.parse_specs(ctx.args.specs)
    try:
        split = commands.validate(ctx.client, extra, ctx.settings)
    except errors.SpecError as exc:
        if ctx.args.format == "json":
            ctx.print_json(commands.spec_error(exc))
        raise
    store_id = split.store_id
    if ctx.args.format == "json":
        ctx.print_json(commands.validation_result(split))
        return EXIT_OK
    if split.has_store_id:
        ctx.print(
            f"valid: {specs.STORE_ID_KEY}={store_id} names a writable store"
        )
    else:
        ctx.print(
            "valid: no store named; uploads go to Glance's default store"
        )
    backend = " ".join(f"{k}={v}" for k, v in split.backend.items())
    ctx.print(
        f"backend specs (for drivers and the scheduler): {backend or '-'}"
    )
    return EXIT_OK


def _seconds(text: str) -> float:
    try:
        return sweep.parse_age(text)
    except ValueError:
        raise UsageError(
            f"--older-than {text!r}: give seconds, or a number with s, m, "
            "h or d (finite, not negative)"
        ) from None


def _project(ctx: Context) -> str | None:
    """The caller's project (None without authentication)."""
    session = ctx.connection.session
    if session.auth is None:
        return None
    try:
        project: str | None = session.get_project_id()
    except ks_exc.ClientException as exc:
        raise errors.GlanceUnavailable(
            f"cannot learn the caller's project from Keystone: {exc}"
        ) from exc
    return project


def cmd_sweep(ctx: Context) -> int:
    """``sweep``: list, and with --delete remove, our stuck images (see
    :mod:`volume_image.core.sweep` for how they are known).
    """
    args = ctx.args
    older = _seconds(args.older_than_given or "1h")
    this_host = socket.gethostname()
    if args.host is not None and args.host == this_host:
        raise UsageError(
            f"--host {args.host!r} is this host: its uploads are known by "
            "their records here; name another host"
        )
    if args.host is not None and args.older_than_given is None:
        raise UsageError(
            "--host needs --older-than: longer than any upload may run "
            "(another host's uploads cannot be checked from here)"
        )
    images: list[dict[str, Any]] = []
    for status in sweep.STUCK_STATES:
        images += ctx.client.list_images(status=status)
    local = records.scan(ctx.settings.conversion_dir)
    picked = sweep.select(
        images,
        older_than=older,
        now=datetime.datetime.now(datetime.timezone.utc),
        records=local,
        this_host=this_host,
        project=_project(ctx) if args.host is not None else None,
        host=args.host,
    )
    # a record is removed only with its image: an image this caller
    # cannot list may still be stuck, and the record is the only proof
    found = picked.found
    deleted: dict[str, str] = {}
    if args.delete:
        for item in found:
            try:
                gone = ctx.client.delete_image(item.image_id)
                deleted[item.image_id] = "deleted" if gone else "already gone"
                records.forget(ctx.settings.conversion_dir, item.image_id)
            except errors.VolumeImageError as exc:
                deleted[item.image_id] = f"not deleted: {exc.message}"
    if args.format == "json":
        ctx.print_json(
            [
                {**item.as_dict(), **({"result": deleted[item.image_id]}
                                      if args.delete else {})}
                for item in found
            ]
        )  # fmt: skip
    elif found:
        headers = ["id", "name", "status", "host", "pid", "age (s)", "proof"]
        rows = [
            [
                i.image_id,
                i.name,
                i.status,
                i.host,
                i.pid,
                f"{i.age_seconds:.0f}",
                i.evidence,
            ]
            + ([deleted[i.image_id]] if args.delete else [])
            for i in found
        ]
        ctx.print(_table(rows, headers + (["result"] if args.delete else [])))
    else:
        ctx.print("no image left behind")
    if picked.elsewhere and args.format != "json":
        ctx.print(
            "stuck images made on other hosts ("
            + ", ".join(picked.elsewhere)
            + ") are not checked: run sweep there, or name a host that is "
            "gone with --host and --older-than"
        )
    failed = [v for v in deleted.values() if v.startswith("not deleted")]
    return EXIT_GLANCE if failed else EXIT_OK


def cmd_audit(ctx: Context) -> int:
    """``audit``: check every volume type against the live stores."""
    if ctx.args.from_file:
        types = commands.read_types(ctx.args.from_file)
    else:
        types = commands.fetch_types(
            ctx.connection.block_storage(ctx.args.block_storage_endpoint),
            ctx.settings,
        )
    report = commands.run_audit(types, ctx.client.get_store_catalog)
    findings, disputed = report.broken, report.disputed
    if ctx.args.format == "json":
        ctx.print_json(report.as_dict())
    elif findings:
        rows = [
            [
                f.type_name,
                f.type_id,
                str(f.key),
                json.dumps(f.value),
                f.reason,
                f.suggestion or "",
            ]
            for f in findings
        ]
        ctx.print(
            _table(
                rows, ["type", "id", "key", "value", "problem", "suggestion"]
            )
        )
        ctx.print()
        for f in findings:
            ctx.print(printable(f"{f.type_name} ({f.type_id}): {f.message}"))
        ctx.print()
        ctx.print(f"{len(findings)} of {len(types)} volume types are broken")
    elif not disputed:
        ctx.print(f"all {len(types)} volume types are valid")
    for f in disputed if ctx.args.format != "json" else []:
        ctx.print(
            f"{printable(f.type_name)} ({printable(f.type_id)}): the Glance "
            "nodes disagree: one "
            f"answer refuses {f.key}={f.value!r} ({f.reason}), another "
            "accepts it. Check that every Glance node has the same "
            "enabled_backends"
        )
    if findings:
        return EXIT_SPEC
    return EXIT_GLANCE if disputed else EXIT_OK


@contextlib.contextmanager
def _cancel_on_signals(
    cancel: threading.Event, received: list[int]
) -> Iterator[None]:
    """While inside, SIGINT and SIGTERM set ``cancel`` and are recorded,
    instead of raising in the middle of whatever the main thread does.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return

    def on_signal(signum: int, frame: object) -> None:
        received.append(signum)
        cancel.set()

    wanted = (signal.SIGINT, signal.SIGTERM)
    before = {sig: signal.signal(sig, on_signal) for sig in wanted}
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


class _ProgressBar:
    """A one-line progress bar on a terminal."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.t0 = time.monotonic()
        self.last = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self.last < 0.2:
            return
        self.last = now
        frac = done / total if total else 1.0
        rate = done / max(now - self.t0, 1e-6) / 1e6
        bar = "#" * int(frac * 30)
        self.stream.write(
            f"\r[{bar:<30}] {frac:6.1%} {done / 1e6:9.1f} MB {rate:7.1f} MB/s"
        )
        if done >= total:
            self.stream.write("\n")
        self.stream.flush()


def cmd_upload(ctx: Context) -> int:
    """``upload``: stream a volume to Glance and verify it."""
    upload = _upload_call(ctx)
    cancel = threading.Event()
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["result"] = upload(cancel)
        except BaseException as exc:  # handed to the main thread
            outcome["error"] = exc

    # the upload runs in a thread; SIGINT and SIGTERM only ask it to
    # cancel, and it cleans up (image, temporary files, qemu-img) itself
    received: list[int] = []
    worker = threading.Thread(target=work, name="volume-image-upload")
    with _cancel_on_signals(cancel, received):
        worker.start()
        while worker.is_alive():
            worker.join(0.2)
    if received:
        return _cancelled(ctx, received[0], outcome)
    if "error" in outcome:
        raise outcome["error"]
    return _print_upload(ctx, outcome["result"])


def _upload_call(
    ctx: Context,
) -> Callable[[threading.Event], UploadResult]:
    """The upload the arguments ask for, to run with a cancel event.

    :raises UsageError: neither --name nor --image-id.
    """
    # the pipeline only for the upload: the other commands start faster
    from volume_image.pipeline import uploader as uploader_mod

    args = ctx.args
    if args.name is None and args.image_id is None:
        raise UsageError("give --name (or --image-id of a queued image)")
    meta = None
    if args.name is not None:
        meta = uploader_mod.ImageMeta(
            name=args.name,
            disk_format=args.disk_format,
            container_format=args.container_format,
            properties=commands.parse_specs(args.property),
        )
    extra = commands.parse_specs(args.extra_spec) if args.extra_spec else None
    show = args.progress
    if show is None:
        show = ctx.err.isatty()
    settings = ctx.settings
    if args.strict_colocation is not None:
        settings = dataclasses.replace(
            settings, colocate_strict=args.strict_colocation
        )
    copy_client = None
    if args.base_image and args.config_file:
        copy_client = ctx.client.with_auth_from_conf(ctx.conf)
    uploader = uploader_mod.Uploader(
        ctx.client, settings, copy_client=copy_client
    )
    uploader.remove_stale_workdirs()

    def upload(cancel: threading.Event) -> UploadResult:
        return uploader.upload(
            args.path,
            meta,
            extra_specs=extra,
            store_id=args.store_id,
            image_id=args.image_id,
            source_format=args.source_format,
            base_image_ref=args.base_image,
            colocate=bool(args.base_image),
            progress=_ProgressBar(ctx.err) if show else None,
            cancel=cancel,
        )

    return upload


def _cancelled(ctx: Context, signum: int, outcome: dict[str, Any]) -> int:
    """Say that a signal cancelled the upload, and how it ended."""
    name = signal.Signals(signum).name
    error = outcome.get("error")
    detail = (
        " ".join([error.message, *error.hints])
        if isinstance(error, errors.VolumeImageError)
        else "cancelled"
    )
    if "result" in outcome:  # done before it could stop
        detail = (
            f"cancelled too late: image {outcome['result'].image_id} "
            "is complete"
        )
    print(f"volume-image: {name}: {printable(detail)}", file=ctx.err)
    # as shells report a command ended by a signal
    return 128 + signum


def _print_upload(ctx: Context, result: UploadResult) -> int:
    """Print what the upload produced; its exit code."""
    done = EXIT_OK if result.unverified_reason is None else EXIT_UNVERIFIED
    if result.unverified_reason is not None:
        print(
            f"volume-image: warning: {result.unverified_reason}", file=ctx.err
        )
    if ctx.args.format == "json":
        ctx.print_json({**result.as_dict(), "throughput": result.throughput})
        return done
    rows = [
        [k, f"{v:.2f}" if isinstance(v, float) else str(v)]
        for k, v in result.as_dict().items()
        if v is not None and k != "colocation"
    ]
    ctx.print(_table(rows, ["field", "value"]))
    ctx.print(
        f"uploaded {result.size / 1e6:.1f} MB to store "
        f"{result.store or '(default)'} in {result.seconds:.2f}s "
        f"({result.throughput / 1e6:.1f} MB/s)"
    )
    if result.colocation is not None:
        _print_colocation(ctx, result.colocation, result.verified)
    return done


def _print_colocation(
    ctx: Context, placed: placement.Colocation, verified: bool
) -> None:
    """The per-store report of a co-located upload."""
    ctx.print()
    ctx.print(f"co-location with base image {placed.base_image}:")
    ctx.print(f"  {placed.reason}")
    rows = [
        [placed.uploaded_to or "(default)", "uploaded", _yes(verified), ""]
    ]
    rows += [
        [c.store, c.status, _yes(c.verified), c.reason] for c in placed.copies
    ]
    rows += [[store, "skipped", "", why] for store, why in placed.skipped]
    ctx.print(_table(rows, ["store", "outcome", "verified", "reason"]))
    ctx.print(f"{placed.summary()} ({placed.seconds:.2f}s of copying)")


def cmd_check_glance_config(ctx: Context) -> int:
    """``check-glance-config``: check Glance's multi-store files."""
    from volume_image.core import glance_config

    try:
        conf = glance_config.read(ctx.args.paths, ctx.args.config_dir)
        # values are substituted as they are checked: a cycle is found here
        findings = glance_config.check(conf)
    except glance_config.ConfigReadError as exc:
        raise UsageError(str(exc)) from exc
    if ctx.args.format == "json":
        ctx.print_json(
            {
                "files": conf.files,
                "multistore": glance_config.is_multistore(conf),
                "findings": [f.as_dict() for f in findings],
            }
        )
    elif findings:
        where = [f"[{f.section}] {f.option}".rstrip() for f in findings]
        rows = [
            [f.rule, place, f.impact]
            for f, place in zip(findings, where, strict=True)
        ]
        ctx.print(_table(rows, ["rule", "where", "impact"]))
        for f, place in zip(findings, where, strict=True):
            ctx.print()
            ctx.print(
                f"{f.rule} ({place}{f' in {f.file}' if f.file else ''}):"
            )
            ctx.print(f"  {f.message}")
            ctx.print(f"  fix: {f.fix}")
        ctx.print()
        ctx.print(f"{len(findings)} problem(s) in {len(conf.files)} file(s)")
    elif not glance_config.is_multistore(conf):
        ctx.print(
            "no enabled_backends: Glance runs one store, nothing to check"
        )
    else:
        ctx.print(f"no problem found in {len(conf.files)} file(s)")
    return EXIT_SPEC if findings else EXIT_OK


def _load_conf(files: list[str]) -> cfg.ConfigOpts:
    for path in files:
        if not os.path.isfile(path):
            raise UsageError(f"config file {path!r} does not exist")
    return config.load(files)


def main(
    argv: Sequence[str] | None = None,
    *,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Run the command line.

    :param argv: the arguments (default: ``sys.argv[1:]``).
    :param out: where results go (default: stdout).
    :param err: where errors go (default: stderr).
    :returns: the exit code.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        cloud_config = (
            connection.cloud_config()
            if connection.clouds_wanted(argv)
            else None
        )
        parser = build_parser(argv, cloud_config=cloud_config)
    except (ks_exc.NoMatchingPlugin, connection.ConfigError) as exc:
        print(f"{PROG}: error: {printable(str(exc))}", file=err)
        return EXIT_USAGE
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    if args.debug:
        logging.basicConfig(level=logging.DEBUG, stream=err)
    else:
        # keystoneauth logs each connect retry; the final error says it all
        logging.getLogger("keystoneauth").setLevel(logging.ERROR)
    func: Callable[[Context], int] = args.func
    try:
        ctx = Context(
            args,
            _load_conf(args.config_file),
            out,
            err,
            argv=argv,
            cloud_config=cloud_config,
        )
        # every command is one operation on Glance; an upload's own data
        # flow is paused out of it (see volume_image.core.deadline)
        with deadline.within(ctx.settings.operation_deadline):
            return func(ctx)
    except UsageError as exc:
        print(f"{PROG}: error: {printable(str(exc))}", file=err)
        return EXIT_USAGE
    except cfg.Error as exc:
        print(f"{PROG}: error: configuration: {printable(str(exc))}", file=err)
        return EXIT_USAGE
    except errors.UploadCancelled as exc:
        print(f"{PROG}: cancelled: {printable(str(exc))}", file=err)
        return exc.exit_code
    except errors.VolumeImageError as exc:
        if args.debug:
            traceback.print_exc(file=err)
        print(f"{PROG}: error: {printable(exc.details())}", file=err)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
