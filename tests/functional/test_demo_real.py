"""``make demo`` as ``make`` runs it: ``python -m harness.demo`` starts
its own Keystone, RabbitMQ, Glance and Cinder, shows the main job with
the real ``openstack`` and ``cinder`` commands, and stops every server.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.functional

ROOT = Path(__file__).resolve().parents[2]


def test_demo_shows_the_main_job() -> None:
    env = dict(os.environ)
    env.pop("PYTHONWARNINGS", None)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), env.get("PYTHONPATH", "")]
    ).rstrip(os.pathsep)
    proc = subprocess.run(
        [sys.executable, "-m", "harness.demo"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=600,
    )
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "Demo finished" in out
    assert "DEMO FAILED" not in out
    # the admin's typo, refused by the filter in cinder-api
    assert (
        "$ openstack volume type set --property image_service:store_id=chep"
        in out
    )
    assert "Glance has no store 'chep'. Did you mean 'cheap'?" in out
    assert "image_service:store_id='cheap'" in out
    # the user's upload with the real cinder client, and where it landed
    assert (
        "$ cinder upload-to-image --disk-format raw vol-1 vol-1-image" in out
    )
    assert "stores='cheap'" in out
    md5 = re.search(r"# md5 of the volume: ([0-9a-f]{32})", out)
    assert md5, out
    assert re.search(rf"\| checksum +\| {md5.group(1)} +\|", out), out
    assert "ok: Glance's checksum = the volume's md5" in out
    assert "verified: the volume's bytes are in store 'cheap'" in out
    # the host tool
    assert "$ volume-image stores" in out
    assert "Glance store 'web' is read-only" in out
    # every server was stopped: the demo has no child left (each
    # server runs in its own session, so none would be reaped with it)
    pids = [int(p) for p in re.findall(r" pid (\d+) ", out)]
    assert len(pids) == 4, out
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or _is_not_ours(pid), pid


def _is_not_ours(pid: int) -> bool:
    """A reused PID: no longer a process of the demo's servers."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True
    return b"volume-image-demo-" not in cmdline
