"""A Glance that accepts connections and never answers, against real
``volume-image`` processes: each wait is one timeout, never retried, and
no command outlives ``[volume_image] operation_deadline``.

Before: keystoneauth retried each read timeout 3 times (4 x the timeout
plus 3.5 s of backoff per request), so ``validate`` took 244 s with the
defaults and an upload about 29 minutes.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..rawserver import raw_server

pytestmark = pytest.mark.functional


@pytest.fixture
def hung() -> Iterator[tuple[str, list[socket.socket]]]:
    """A server on 127.0.0.1 that accepts and never answers."""
    with raw_server() as (port, accepted):
        yield f"http://127.0.0.1:{port}", accepted


def run(
    url: str, tmp_path: Path, conf: str, *argv: str
) -> tuple[subprocess.CompletedProcess[str], float]:
    path = tmp_path / "vi.conf"
    path.write_text(conf)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "volume_image.cli.main",
         "--config-file", str(path),
         "--os-auth-type", "none", "--os-endpoint", url, *argv],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    return proc, time.monotonic() - t0


def test_validate_waits_one_timeout(
    hung: tuple[str, list[socket.socket]], tmp_path: Path
) -> None:
    url, accepted = hung
    proc, took = run(
        url, tmp_path, "", "--timeout", "2",
        "validate", "image_service:store_id=cheap",
    )  # fmt: skip
    assert proc.returncode == 4, proc.stderr
    assert "timed out" in proc.stderr
    # one request (stores/detail), asked once; 4 x 2 s + backoff before
    assert len(accepted) == 1
    # (the interpreter's start-up included; before: 4 x 2 s + 3.5 s)
    assert 2 <= took < 8, took


def test_the_operation_deadline_bounds_a_long_timeout(
    hung: tuple[str, list[socket.socket]], tmp_path: Path
) -> None:
    url, _ = hung
    proc, took = run(
        url, tmp_path, "[volume_image]\noperation_deadline = 2\n",
        "--timeout", "60", "stores",
    )  # fmt: skip
    assert proc.returncode == 4, proc.stderr
    assert took < 8, took  # a 60 s timeout, cut to the 2 s deadline


def test_an_upload_gives_up_at_its_deadline(
    hung: tuple[str, list[socket.socket]], tmp_path: Path
) -> None:
    url, accepted = hung
    src = tmp_path / "vol.raw"
    src.write_bytes(b"\0" * 65536)
    proc, took = run(
        url, tmp_path, "[volume_image]\noperation_deadline = 3\n",
        "--timeout", "60", "upload", str(src), "--name", "hung",
    )  # fmt: skip
    assert proc.returncode == 4, proc.stderr
    assert "Glance is unavailable" in proc.stderr
    assert took < 9, took
    # one try of the first request; nothing asked again
    assert len(accepted) == 1
