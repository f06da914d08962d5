"""Every command the docs show runs as printed, with the output printed.

Each ``.. code-block:: console`` of ``doc/source/*.rst`` and
``README.rst`` that is not marked ``:class: no-run`` is run against the
test Glance (its URL replaces ``http://127.0.0.1:9292``), command by
command, in a fresh directory.  Output is compared whitespace-
insensitively, and ``...`` matches anything.  A command that ends with
the comment ``# exit code N`` must exit with N; one whose shown output
has a ``volume-image: error:`` line must fail; any other must succeed.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness import launcher

pytestmark = pytest.mark.functional

ROOT = Path(__file__).parents[2]
DOC_URL = "http://127.0.0.1:9292"
PAGES = [ROOT / "README.rst", *sorted((ROOT / "doc" / "source").glob("*.rst"))]


@dataclasses.dataclass
class Command:
    line: str
    expected: list[str]


@dataclasses.dataclass
class Block:
    page: str
    lineno: int
    commands: list[Command]

    @property
    def id(self) -> str:
        return f"{self.page}:{self.lineno}"


def console_blocks(path: Path) -> list[Block]:
    """The runnable console blocks of one page."""
    lines = path.read_text().splitlines()
    blocks = []
    i = 0
    while i < len(lines):
        if lines[i].strip() != ".. code-block:: console":
            i += 1
            continue
        start = i + 1
        indent = len(lines[i]) - len(lines[i].lstrip())
        i += 1
        options = []
        while i < len(lines) and lines[i].strip().startswith(":"):
            options.append(lines[i].strip())
            i += 1
        body = []
        while i < len(lines) and (
            not lines[i].strip()
            or len(lines[i]) - len(lines[i].lstrip()) > indent
        ):
            body.append(lines[i].strip())
            i += 1
        if ":class: no-run" in options:
            continue
        commands: list[Command] = []
        for text in body:
            if text.startswith("$ "):
                commands.append(Command(text[2:], []))
            elif text and commands:
                commands[-1].expected.append(text)
        blocks.append(Block(path.name, start, commands))
    return blocks


BLOCKS = [block for page in PAGES for block in console_blocks(page)]


def _normal(text: str) -> str:
    return " ".join(text.split())


def _matches(expected: str, actual: str) -> bool:
    pattern = ".*?".join(re.escape(p) for p in _normal(expected).split("..."))
    return re.fullmatch(pattern, _normal(actual), flags=re.DOTALL) is not None


def test_the_docs_have_runnable_examples() -> None:
    pages = {b.page for b in BLOCKS}
    assert {"README.rst", "reference.rst", "operator.rst"} <= pages
    assert sum(len(b.commands) for b in BLOCKS) >= 15


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: b.id)
def test_console_block_runs_as_printed(
    block: Block, glance_server: launcher.GlanceServer, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    # volume-image from the project's environment, as after `make setup`
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    exports: list[str] = []
    for command in block.commands:
        line = command.line.replace(DOC_URL, glance_server.url)
        if line.startswith("export "):
            exports.append(line)
            continue
        proc = subprocess.run(
            ["bash", "-c", "; ".join([*exports, line])],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        output = proc.stdout + proc.stderr
        expected = "\n".join(command.expected)
        where = f"{block.id}: $ {command.line}"
        code = re.search(r"#\s*exit code (\d+)\s*$", command.line)
        if code:
            assert proc.returncode == int(code.group(1)), f"{where}\n{output}"
        elif expected.startswith("volume-image: error:") or (
            "\nvolume-image: error:" in expected
        ):
            assert proc.returncode != 0, f"{where} succeeded:\n{output}"
        else:
            assert proc.returncode == 0, f"{where} failed:\n{output}"
        if expected:
            assert _matches(expected, output), (
                f"{where}\n--- the docs show:\n{expected}\n"
                f"--- it printed:\n{output}"
            )
