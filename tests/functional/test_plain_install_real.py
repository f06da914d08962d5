"""A plain ``pip install volume_image`` has every feature.

The project's own virtualenv hides a missing dependency: the test extras
bring much more (``cryptography`` through other packages, say).  Here
the package is installed with no extras into a virtualenv of its own
(built once per ``pyproject.toml`` and Python, under the harness cache),
and into Cinder 29's virtualenv, whose requirements must stay met.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness import launcher
from harness.servers.base import cache_dir

pytestmark = pytest.mark.functional

ROOT = Path(__file__).parents[2]
MIB = 1 << 20


def _env() -> dict[str, str]:
    """No OS_*, and nothing of the project's environment on sys.path."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OS_", "PYTHON", "VIRTUAL_ENV"))
    }


def _run(
    *cmd: str | Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(c) for c in cmd],
        capture_output=True,
        text=True,
        env=_env() if env is None else env,
        cwd=cwd,
        timeout=600,
        check=False,
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package as pip builds it from this checkout."""
    out = tmp_path_factory.mktemp("wheel")
    done = _run(
        sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
        "--disable-pip-version-check", "-w", out, ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (found,) = out.glob("volume_image-*.whl")
    return found


@pytest.fixture(scope="module")
def plain(wheel: Path) -> Path:
    """A virtualenv with ``pip install volume_image`` (no extras), its
    dependencies resolved once per ``pyproject.toml``; this checkout's
    wheel is installed over it for each run.
    """
    digest = hashlib.sha256(sys.version.encode())
    digest.update((ROOT / "pyproject.toml").read_bytes())
    root = cache_dir() / "venvs"
    venv = root / f"plain-install-{digest.hexdigest()[:12]}"
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".plain-install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (venv / ".complete").exists():
            shutil.rmtree(venv, ignore_errors=True)
            made = _run(sys.executable, "-m", "venv", venv)
            assert made.returncode == 0, made.stderr
            done = _run(
                venv / "bin" / "python", "-m", "pip", "install", "-q",
                "--disable-pip-version-check", wheel,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            (venv / ".complete").write_text(wheel.name + "\n")
        done = _run(
            venv / "bin" / "python", "-m", "pip", "install", "-q",
            "--disable-pip-version-check", "--no-deps", "--force-reinstall",
            wheel,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    return venv


def test_no_extras_installs_what_the_code_imports(plain: Path) -> None:
    done = _run(plain / "bin" / "python", "-m", "pip", "check")
    assert done.returncode == 0, done.stdout + done.stderr
    # the inspector's LUKS support needs cryptography: the oslo.utils
    # extra is declared, not borrowed from the test extras
    listed = _run(plain / "bin" / "python", "-m", "pip", "list", "--format",
                  "json").stdout  # fmt: skip
    names = {p["name"].lower() for p in json.loads(listed)}
    assert {"cryptography", "requests", "urllib3"} <= names
    # and nothing of the extras
    assert not names & {"openstacksdk", "python-openstackclient", "pytest"}


def test_plain_install_uploads_a_qcow2_source(
    plain: Path, glance_server: launcher.GlanceServer, tmp_path: Path
) -> None:
    """A non-raw source is inspected (oslo.utils' format inspector),
    converted by qemu-img, sent and verified, by the installed command.
    """
    raw = tmp_path / "volume.raw"
    data = hashlib.sha256(b"plain").digest() * (4 * MIB // 32)
    raw.write_bytes(data)
    source = tmp_path / "volume.qcow2"
    made = _run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, source)
    assert made.returncode == 0, made.stderr
    env = dict(_env(), OS_AUTH_TYPE="none", OS_ENDPOINT=glance_server.url)
    done = _run(
        plain / "bin" / "volume-image", "upload", source,
        "--source-format", "qcow2", "--disk-format", "raw",
        "--name", "plain-install", "--store-id", "cheap",
        env=env, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    fields = dict(
        line.split(None, 1) for line in done.stdout.splitlines() if " " in line
    )
    assert fields["store"].strip() == "cheap"
    assert fields["verified"].strip() == "True"
    md5 = hashlib.md5(data).hexdigest()  # noqa: S324 - Glance's checksum
    assert fields["checksum"].strip() == md5


def test_every_command_helps(plain: Path) -> None:
    listing = _run(
        plain / "bin" / "python",
        "-c",
        "import argparse\n"
        "from volume_image.cli.main import build_parser\n"
        "p = build_parser()\n"
        "for a in p._actions:\n"
        "    if isinstance(a, argparse._SubParsersAction):\n"
        "        print(*a.choices)\n",
    )
    assert listing.returncode == 0, listing.stderr
    commands = listing.stdout.split()
    assert {"stores", "validate", "upload", "audit", "sweep"} <= set(commands)
    for command in [[], *([c] for c in commands)]:
        done = _run(plain / "bin" / "volume-image", *command, "--help")
        assert done.returncode == 0, (command, done.stderr)
        assert done.stdout.startswith("usage: volume-image"), command


def test_cinder_venv_stays_consistent(wheel: Path, tmp_path: Path) -> None:
    """Installed into Cinder 29's virtualenv, the package needs nothing
    Cinder does not already have, and ``pip check`` stays clean (the
    virtualenv itself is shared, so the package goes to a --target
    directory on ``PYTHONPATH``).
    """
    python = launcher.ensure_venv("cinder") / "bin" / "python"
    report = tmp_path / "report.json"
    done = _run(
        python, "-m", "pip", "install", "--dry-run", "-q",
        "--disable-pip-version-check", "--report", report, wheel,
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    would = [
        item["metadata"]["name"]
        for item in json.loads(report.read_text())["install"]
    ]
    assert would == ["volume_image"], would
    target = tmp_path / "target"
    done = _run(
        python, "-m", "pip", "install", "-q", "--no-deps",
        "--disable-pip-version-check", "--target", target, wheel,
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    checked = _run(
        python, "-m", "pip", "check",
        env=dict(_env(), PYTHONPATH=str(target)), cwd=tmp_path,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "No broken requirements found." in checked.stdout
    # the package pip check looked at is ours, from the target
    seen = _run(
        python, "-m", "pip", "show", "volume_image",
        env=dict(_env(), PYTHONPATH=str(target)), cwd=tmp_path,
    )  # fmt: skip
    assert seen.returncode == 0 and str(target) in seen.stdout, seen.stdout
