"""SIGINT and SIGTERM sent to a real ``volume-image upload`` process at
several points: during the qemu-img conversion, during the PUT, and
during verification.  Each ends with a one-line message, the shell's exit
code (128 + the signal), no image of ours left, no temporary directory
left and no qemu-img still running.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from harness import launcher

from .conftest import make_client
from .helpers import GlanceProxy

pytestmark = pytest.mark.functional

MiB = 1 << 20


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """512 MiB of random data (conversion and PUT take seconds)."""
    path = tmp_path_factory.mktemp("signals") / "big.raw"
    with open(path, "wb") as f:
        for _ in range(512):
            f.write(os.urandom(MiB))
    return path


def qemu_children(pid: int) -> list[str]:
    out = subprocess.run(
        ["ps", "-o", "pid=,comm=", "--ppid", str(pid)],
        capture_output=True, text=True, check=False,
    ).stdout  # fmt: skip
    return [line for line in out.splitlines() if "qemu-img" in line]


def run_and_signal(
    url: str,
    big: Path,
    tmp_path: Path,
    name: str,
    sig: int,
    when: Callable[[subprocess.Popen[str], Path], bool],
    *extra: str,
) -> tuple[subprocess.Popen[str], str]:
    work = tmp_path / "work"
    work.mkdir()
    conf = tmp_path / "vi.conf"
    conf.write_text(f"[volume_image]\nconversion_dir = {work}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "volume_image.cli.main",
         "--config-file", str(conf),
         "--os-auth-type", "none", "--os-endpoint", url,
         "upload", str(big), "--name", name, "--store-id", "cheap", *extra],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not when(proc, work):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the moment never came"
        time.sleep(0.02)
    children = qemu_children(proc.pid)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    for line in children:  # the qemu-img it ran is gone too
        pid = int(line.split()[0])
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    records = work / "volume_image-records"  # the image's, dropped
    left = [p for p in work.iterdir() if p != records]
    assert left == [], "a temporary directory was left"
    assert not records.exists() or list(records.iterdir()) == []
    return proc, err


def our_images(url: str, name: str) -> list[dict[str, object]]:
    return make_client(url).list_images(name=name)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_during_conversion(
    glance_server: launcher.GlanceServer, big: Path, tmp_path: Path, sig: int
) -> None:
    name = f"sig-convert-{sig}"

    def converting(proc: subprocess.Popen[str], work: Path) -> bool:
        return bool(qemu_children(proc.pid))

    proc, err = run_and_signal(
        glance_server.url, big, tmp_path, name, sig, converting,
        "--disk-format", "qcow2",
    )  # fmt: skip
    assert proc.returncode == 128 + sig, err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert signal.Signals(sig).name in err
    assert our_images(glance_server.url, name) == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_during_the_put(
    glance_server: launcher.GlanceServer, big: Path, tmp_path: Path, sig: int
) -> None:
    name = f"sig-put-{sig}"
    # one Glance worker: it answers nothing else during the PUT, so watch
    # its store for the new partial file
    store = glance_server.store_dir("cheap")
    before = set(os.listdir(store))

    def sending(proc: subprocess.Popen[str], work: Path) -> bool:
        fresh = set(os.listdir(store)) - before
        return any((store / f).stat().st_size > 64 * MiB for f in fresh)

    proc, err = run_and_signal(
        glance_server.url, big, tmp_path, name, sig, sending
    )
    assert proc.returncode == 128 + sig, err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert "was deleted" in err
    assert our_images(glance_server.url, name) == []


def test_signal_during_verification(
    glance_server: launcher.GlanceServer, big: Path, tmp_path: Path
) -> None:
    """The verification GETs are held back (503s from a proxy): the
    signal lands while the upload verifies, and the complete image we
    made is deleted.
    """
    proxy = GlanceProxy(glance_server.url)
    name = "sig-verify"
    armed: list[bool] = []

    def arm() -> None:
        proxy.fail_image_gets = 1000
        armed.append(True)

    proxy.on_put_done = arm
    try:
        proc, err = run_and_signal(
            proxy.url, big, tmp_path, name, signal.SIGINT,
            lambda p, w: bool(armed) and proxy.fail_image_gets < 999,
        )  # fmt: skip
    finally:
        proxy.stop()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert our_images(glance_server.url, name) == []
