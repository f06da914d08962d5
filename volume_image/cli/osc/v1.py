"""``openstack volume type store validate`` and ``... audit``.

They run the same code as ``volume-image validate`` and ``audit``
(:mod:`volume_image.cli.commands`); ``openstack`` brings authentication,
clouds.yaml, ``--help`` and the output formats (``-f
table/json/yaml/value/csv``, ``-c``).

Exit codes: 0 valid (no broken type); 1 the check could not be made
(Glance or the block-storage API unreachable, authentication, bad input;
for ``audit``, Glance nodes that disagree), as for every ``openstack``
command; 2 a usage error (argparse); 3 an invalid extra spec or a broken
volume type was found (the output shows it).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from osc_lib import exceptions as osc_exc
from osc_lib.cli import format_columns
from osc_lib.command import command

from volume_image import config, errors
from volume_image.cli import commands
from volume_image.clients import connection
from volume_image.core import deadline, specs

__all__ = ["EXIT_FOUND", "AuditStores", "ValidateStore"]

#: an invalid spec, or a broken volume type, was found (as volume-image)
EXIT_FOUND = 3


def _connection(cmd: command.Command) -> connection.Connection:
    # python-openstackclient adds the attribute at start-up (API_NAME of
    # plugin.py), so no type checker knows it
    manager: Any = cmd.app.client_manager
    conn: connection.Connection = manager.volume_image
    return conn


def _command_error(exc: Exception) -> osc_exc.CommandError:
    # the endpoint and request id too: right for a terminal
    if isinstance(exc, errors.VolumeImageError):
        return osc_exc.CommandError(exc.details())
    return osc_exc.CommandError(str(exc))


class _Operation:
    """One operation on Glance: every request, retry and pause of the
    command within ``[volume_image] operation_deadline`` (its default: the
    plugin reads no volume_image configuration file).
    """

    def run(self, parsed_args: argparse.Namespace) -> int:
        with deadline.within(config.Settings().operation_deadline):
            return super().run(parsed_args)  # type: ignore[misc,no-any-return]


class ValidateStore(_Operation, command.ShowOne):
    """Check volume-type extra specs against Glance's stores.

    The rules of the block-storage API's store validation: the
    image_service:store_id spec must name a store Glance lists, that is
    neither read-only nor reserved, and image_service: keys must be
    lower-case. Nothing is stored. Exit 3 when the specs are invalid.
    """

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        """The command's options."""
        parser = super().get_parser(prog_name)
        parser.add_argument(
            "--property",
            metavar="<key=value>",
            action="append",
            required=True,
            dest="properties",
            help="An extra spec to check, as given to 'openstack volume "
            "type set --property' (repeat option to check several at once)",
        )
        return parser

    def take_action(
        self, parsed_args: argparse.Namespace
    ) -> tuple[Sequence[str], Sequence[Any]]:
        """Validate, and show the outcome."""
        self._found = False
        try:
            extra = commands.parse_specs(parsed_args.properties)
        except commands.UsageError as exc:
            raise _command_error(exc) from exc
        settings = config.Settings()
        client = _connection(self).glance(settings)
        try:
            split = commands.validate(client, extra, settings)
        except errors.SpecError as exc:
            self._found = True
            result = commands.spec_error(exc)
            result.update(store_id=None, backend_specs=None)
        except errors.VolumeImageError as exc:
            raise _command_error(exc) from exc
        else:
            result = commands.validation_result(split)
            result.update(
                error=None,
                key=None,
                value=None,
                suggestion=None,
                message=(
                    f"{specs.STORE_ID_KEY}={split.store_id} names a "
                    "writable store"
                    if split.has_store_id
                    else "no store named; uploads go to Glance's default store"
                ),
            )
        columns = (
            "valid",
            "store_id",
            "message",
            "error",
            "key",
            "value",
            "suggestion",
            "backend_specs",
        )
        backend = result["backend_specs"]
        result["backend_specs"] = (
            None if backend is None else format_columns.DictColumn(backend)
        )
        return columns, tuple(result[c] for c in columns)

    def run(self, parsed_args: argparse.Namespace) -> int:
        """Show the outcome; exit 3 when the specs are invalid."""
        return super().run(parsed_args) or (EXIT_FOUND if self._found else 0)


class AuditStores(_Operation, command.Lister):
    """Check every volume type against Glance's stores.

    Lists the volume types whose image_service: extra specs Glance's
    stores no longer allow (a store removed, or become read-only), with
    one Glance request. Run it after changing Glance's stores. The types
    come from the block-storage API (listing private types needs the
    admin role) or from a file. A type is called broken only when three
    answers of Glance refuse it; one that another answer accepts is
    "disputed" (the Glance nodes disagree). Exit 3 when a type is
    broken, 1 when the only findings are disputed.
    """

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        """The command's options."""
        parser = super().get_parser(prog_name)
        source = parser.add_mutually_exclusive_group()
        source.add_argument(
            "--from-file",
            metavar="<path>",
            help="Read the types from <path> ('-' for stdin): the API's "
            '{"volume_types": [...]} answer, or the output of '
            "'openstack volume type list --long -f json'",
        )
        source.add_argument(
            "--block-storage-endpoint",
            metavar="<url>",
            help="The block-storage API root with the project id, e.g. "
            "https://cinder.example/v3/<project-id>, instead of the "
            "service catalog's (or the cloud's "
            "block_storage_endpoint_override)",
        )
        parser.add_argument(
            "--long",
            action="store_true",
            default=False,
            help="List additional fields in output (the full message)",
        )
        return parser

    def take_action(
        self, parsed_args: argparse.Namespace
    ) -> tuple[Sequence[str], Sequence[Sequence[Any]]]:
        """Audit, and list the findings."""
        self._exit = 0
        settings = config.Settings()
        conn = _connection(self)
        try:
            if parsed_args.from_file:
                types = commands.read_types(parsed_args.from_file)
            else:
                types = commands.fetch_types(
                    conn.block_storage(parsed_args.block_storage_endpoint),
                    settings,
                )
            report = commands.run_audit(
                types, conn.glance(settings).get_store_catalog
            )
        except (commands.UsageError, errors.VolumeImageError) as exc:
            raise _command_error(exc) from exc
        if report.broken:
            self._exit = EXIT_FOUND
            self.app.stderr.write(
                f"{len(report.broken)} of {report.checked} volume types "
                "are broken\n"
            )
        elif report.disputed:
            self._exit = 1
        if report.disputed:
            self.app.stderr.write(
                f"{len(report.disputed)} volume types are disputed: the "
                "Glance nodes disagree. Check that every Glance node has "
                "the same enabled_backends\n"
            )
        columns = ["ID", "Name", "Status", "Key", "Value", "Problem"]
        columns += ["Suggestion"]
        if parsed_args.long:
            columns.append("Message")
        rows = []
        for status, found in (
            ("broken", report.broken),
            ("disputed", report.disputed),
        ):
            for f in found:
                row = [
                    f.type_id,
                    f.type_name,
                    status,
                    f.key,
                    f.value,
                    f.reason,
                    f.suggestion,
                ]
                if parsed_args.long:
                    row.append(f.message)
                rows.append(row)
        return columns, rows

    def run(self, parsed_args: argparse.Namespace) -> int:
        """List the findings; exit 3 when a type is broken."""
        return super().run(parsed_args) or self._exit
