"""``volume-image``: check stores and extra specs, and upload volumes.

Global options (authentication, ``--config-file``, ``--debug``) come
before the subcommand, as with ``openstack``::

    volume-image --os-auth-type none --os-endpoint URL stores
    volume-image validate image_service:store_id=cheap volume_backend_name=lvm

Exit codes: 0 success, 2 usage error, 3 invalid extra spec, 4 Glance
error (unreachable, authentication, bad answer, no multi-store), 5 failed
upload.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from keystoneauth1 import adapter as ks_adapter
from keystoneauth1 import exceptions as ks_exc
from keystoneauth1 import loading as ks_loading
from oslo_config import cfg

from volume_image import config, errors, glance, specs, validation

__all__ = [
    "EXIT_GLANCE",
    "EXIT_OK",
    "EXIT_SPEC",
    "EXIT_UPLOAD",
    "EXIT_USAGE",
    "main",
]

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_SPEC = 3
EXIT_GLANCE = 4
EXIT_UPLOAD = 5

PROG = "volume-image"


class UsageError(Exception):
    """Bad command-line input found after argparse."""


def _parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Check Glance stores and image_service:store_id extra "
        "specs, and upload volumes to Glance stores.",
        epilog="Exit codes: 0 success, 2 usage error, 3 invalid extra "
        "spec, 4 Glance error, 5 failed upload.",
    )
    parser.add_argument(
        "--config-file",
        metavar="PATH",
        action="append",
        default=[],
        help="oslo.config file with [glance] and [volume_image] sections; "
        "used for the Glance connection when no --os-auth-type is given. "
        "Repeatable.",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show tracebacks and log HTTP requests",
    )
    # OpenStack conventions: OS_* variables and --os-* flags
    ks_loading.register_auth_argparse_arguments(parser, list(argv))
    ks_loading.register_session_argparse_arguments(parser)
    ks_loading.register_adapter_argparse_arguments(
        parser, service_type="image"
    )

    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser(
        "stores",
        help="list Glance's stores",
        description="List the stores Glance offers (GET /v2/info/stores; "
        "type and weight when the caller may read /detail).",
    )
    _add_format(p)
    p.set_defaults(func=cmd_stores)

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
    return parser


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
    ) -> None:
        self.args = args
        self.conf = conf
        self.out = out
        self.settings = config.Settings.from_conf(conf)
        self._client: glance.GlanceClient | None = None

    @property
    def client(self) -> glance.GlanceClient:
        """The Glance client, from the --os-* flags or the config file."""
        if self._client is None:
            self._client = _make_client(self.args, self.conf)
        return self._client

    def validator(self) -> validation.Validator:
        """A validator over this command's Glance."""
        cache = validation.StoreCatalogCache(
            self.client.get_store_catalog, ttl=self.settings.store_cache_ttl
        )
        return validation.Validator(cache)

    def print(self, text: str = "") -> None:
        print(text, file=self.out)

    def print_json(self, doc: Any) -> None:
        json.dump(doc, self.out, indent=2, sort_keys=True)
        self.out.write("\n")


def _make_client(
    args: argparse.Namespace, conf: cfg.ConfigOpts
) -> glance.GlanceClient:
    use_detail = conf[config.GROUP].use_store_detail
    if args.os_auth_type:
        try:
            auth = ks_loading.load_auth_from_argparse_arguments(args)
            session = ks_loading.load_session_from_argparse_arguments(
                args, auth=auth
            )
        except ks_exc.ClientException as exc:
            raise errors.GlanceAuthError(
                f"cannot set up authentication: {exc}"
            ) from exc
        if session.timeout is None:
            session.timeout = config.DEFAULT_TIMEOUT
        adapter = ks_adapter.Adapter(
            session,
            auth=auth,
            service_type=args.os_service_type or "image",
            service_name=args.os_service_name,
            interface=args.os_interface,
            region_name=args.os_region_name,
            endpoint_override=args.os_endpoint_override,
            connect_retries=config.DEFAULT_CONNECT_RETRIES,
        )
        return glance.GlanceClient(adapter, use_store_detail=use_detail)
    if args.config_file:
        return glance.GlanceClient.from_conf(conf)
    if args.os_endpoint_override:
        # a token-less Glance named by its URL alone
        session = ks_loading.load_session_from_argparse_arguments(args)
        if session.timeout is None:
            session.timeout = config.DEFAULT_TIMEOUT
        adapter = ks_adapter.Adapter(
            session,
            endpoint_override=args.os_endpoint_override,
            connect_retries=config.DEFAULT_CONNECT_RETRIES,
        )
        return glance.GlanceClient(adapter, use_store_detail=use_detail)
    raise UsageError(
        "no Glance to ask: give --os-auth-type (or OS_AUTH_TYPE, e.g. "
        "'password' with OS_AUTH_URL..., or 'none' with --os-endpoint URL) "
        "or --config-file with a [glance] section"
    )


def _table(rows: list[list[str]], headers: list[str]) -> str:
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


def _parse_specs(items: Sequence[str]) -> dict[str, str]:
    result: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"{item!r} is not KEY=VALUE")
        if key in result:
            raise UsageError(f"{key!r} is given twice")
        result[key] = value
    return result


def cmd_validate(ctx: Context) -> int:
    """``validate``: check a whole extra-spec set."""
    extra = _parse_specs(ctx.args.specs)
    try:
        split = ctx.validator().validate_extra_specs(extra)
    except errors.SpecError as exc:
        if ctx.args.format == "json":
            ctx.print_json(
                {
                    "valid": False,
                    "error": type(exc).__name__,
                    "message": exc.message,
                    "key": exc.key,
                    "value": exc.value,
                    "suggestion": exc.suggestion,
                }
            )
        raise
    store_id = split.store_id
    if ctx.args.format == "json":
        ctx.print_json(
            {
                "valid": True,
                "store_id": store_id,
                "backend_specs": dict(split.backend),
                "image_service_specs": dict(split.image_service),
            }
        )
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


def _load_conf(files: list[str]) -> cfg.ConfigOpts:
    conf = cfg.ConfigOpts()
    config.register_opts(conf)
    args: list[str] = []
    for path in files:
        if not os.path.isfile(path):
            raise UsageError(f"config file {path!r} does not exist")
        args += ["--config-file", path]
    conf(args=args, project="volume_image", default_config_files=[])
    return conf


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
        parser = _parser(argv)
    except ks_exc.NoMatchingPlugin as exc:
        print(f"{PROG}: error: {exc}", file=err)
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
        ctx = Context(args, _load_conf(args.config_file), out)
        return func(ctx)
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=err)
        return EXIT_USAGE
    except cfg.Error as exc:
        print(f"{PROG}: error: configuration: {exc}", file=err)
        return EXIT_USAGE
    except errors.VolumeImageError as exc:
        if args.debug:
            traceback.print_exc(file=err)
        print(f"{PROG}: error: {exc}", file=err)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
