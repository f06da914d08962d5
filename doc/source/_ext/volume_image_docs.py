"""Sphinx directives that render reference pages from the code, so that
they cannot drift from it.

``.. cli-help::``
    The ``--help`` of ``volume-image`` and of each subcommand, from the
    parser itself.
``.. error-table::``
    Every class of :mod:`volume_image.errors`, in tree order, with its
    exit code, HTTP status, and the cause and fix from its docstring.
"""

from __future__ import annotations

import inspect
import os
from typing import Any

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

from volume_image import errors
from volume_image.cli import main as cli
from volume_image.clients import connection as _connect


def _help(argv: list[str]) -> str:
    # argparse wraps to the terminal width: fix it for a stable page
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "79"
    try:
        # no clouds.yaml, no OS_*: the page must not depend on who builds it
        parser = cli.build_parser(
            argv, cloud_config=_connect.cloud_config(isolated=True)
        )
        if not argv:
            return parser.format_help()
        # argparse keeps subparsers only in its private action list
        sub = next(a for a in parser._actions if a.dest == "command")
        return sub.choices[argv[0]].format_help()  # type: ignore[index]
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old


class CliHelp(SphinxDirective):
    """Render ``volume-image [COMMAND] --help``."""

    optional_arguments = 1

    def run(self) -> list[nodes.Node]:
        argv = list(self.arguments)
        text = _help(argv)
        block = nodes.literal_block(text, text)
        block["language"] = "text"
        return [block]


def _tree(cls: type, depth: int = 0) -> list[tuple[int, type]]:
    rows = [(depth, cls)]
    for sub in cls.__subclasses__():
        if sub.__module__ == errors.__name__:
            rows += _tree(sub, depth + 1)
    return rows


def _doc_parts(cls: type) -> tuple[str, str]:
    doc = inspect.getdoc(cls) or ""
    cause, _, rest = doc.partition("Fix:")
    fix = rest.split("\n\n")[0]
    first = cause.split("\n\n")[0]
    return " ".join(first.split()), " ".join(fix.split())


class ErrorTable(SphinxDirective):
    """A table of the exception tree."""

    def run(self) -> list[nodes.Node]:
        lines = [
            ".. list-table::",
            "   :header-rows: 1",
            "   :widths: 24 6 6 32 32",
            "",
            "   * - class",
            "     - exit",
            "     - HTTP",
            "     - cause",
            "     - fix",
        ]
        for depth, cls in _tree(errors.VolumeImageError):
            cause, fix = _doc_parts(cls)
            indent = "\u2003" * depth
            lines += [
                f"   * - {indent}:class:`~volume_image.errors.{cls.__name__}`",
                f"     - {cls.exit_code}",  # type: ignore[attr-defined]
                f"     - {cls.api_status}",  # type: ignore[attr-defined]
                f"     - {cause}",
                f"     - {fix or '-'}",
            ]
        node = nodes.container()
        self.state.nested_parse(
            StringList(lines, source="error-table"), self.content_offset, node
        )
        return node.children


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("cli-help", CliHelp)
    app.add_directive("error-table", ErrorTable)
    return {"parallel_read_safe": True, "version": "1"}
