"""Same-cluster upload on real Ceph: upstream Cinder's stream against
volume_image's fast path, side by side on one stack
(:class:`harness.servers.ceph_site.CephSite`).

Each round creates a 4 GiB RBD volume with 512 MiB written (memstore
keeps data in RAM, so sizes stay modest) on backend ``upstream``
(Cinder 29's RBDDriver) and on ``ours`` (the same driver wrapped by
StoreAwareDriver), both in cluster A, and uploads it raw into store
``fast`` (cluster A). Rounds alternate the order. Measured per upload:

* seconds from the upload request until the volume is ``available``
  again and the image ``active`` (``seconds``), and until Glance has
  the image's checksum too (``seconds_hashed``: an image made by the
  location API is active first and hashed by Glance afterwards, reading
  it in Ceph);
* bytes that crossed the volume host: the TCP bytes of cinder-volume's
  processes (sent + received), from ``ss -tinp`` sampled every 0.1 s
  (a connection that opens and closes between two samples is missed;
  the stream's connections live for the whole upload);
* bytes Glance received as image data (``size`` of a PUT; 0 when no PUT);
* CPU seconds of cinder-volume (its processes' user + system).

    .venv/bin/python -m bench.ceph_bench [--rounds 2] [--size-gib 4]
        [--written-mib 512]

Writes ``bench/results/ceph_bench.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests

from harness import launcher
from harness.servers.ceph_site import GIB, MIB, CephSite
from harness.servers.cinder_stack import CinderStack

# each is absent until the socket has sent (or received) a byte
_SENT = re.compile(r"bytes_sent:(\d+)")
_RECEIVED = re.compile(r"bytes_received:(\d+)")
_CLK = os.sysconf("SC_CLK_TCK")


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (cinder-volume's backend processes)."""
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        todo += CinderStack._children(p)
    return pids


def _cpu(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1]
        except OSError:
            continue
        parts = fields.split()
        total += int(parts[11]) + int(parts[12])  # utime, stime
    return total / _CLK


class TcpMeter:
    """TCP bytes of a set of processes, sampled from ``ss -tinp``."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = {str(p) for p in pids}
        self.first: dict[str, int] = {}
        self.last: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        lines = subprocess.run(
            ["ss", "-tinpH"], capture_output=True, text=True, check=False
        ).stdout.splitlines()
        head = ""
        for line in lines:
            if not line[:1].isspace():
                head = line  # a socket; its details follow, indented
                continue
            if not set(re.findall(r"pid=(\d+)", head)) & self.pids:
                continue
            sent, received = _SENT.search(line), _RECEIVED.search(line)
            key = " ".join(head.split()[3:5])
            value = (int(sent.group(1)) if sent else 0) + (
                int(received.group(1)) if received else 0
            )
            self.first.setdefault(key, value)
            self.last[key] = value

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            time.sleep(0.1)

    def __enter__(self) -> TcpMeter:
        self._sample()
        self.base = dict(self.first)  # connections open before the upload
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    @property
    def bytes(self) -> int:
        return sum(
            value - self.base.get(key, 0) for key, value in self.last.items()
        )


def _one(
    site: CephSite, backend: str, size_gib: int, written: int, seed: int
) -> dict[str, Any]:
    volume, md5 = site.new_volume(
        backend, "fast", size_gib=size_gib, written=written, seed=seed
    )
    demo = site.stack.rest(user="demo")
    pids = _tree(site.stack.service_pids()["cinder-volume"])
    glance_mark = site.glance.log_path.stat().st_size
    cpu0 = _cpu(pids)
    with TcpMeter(pids) as meter:
        t0 = time.monotonic()
        image_id = demo.upload_to_image(volume["id"], f"bench-{backend}")
        demo.wait_volume_leaves(volume["id"], "uploading", timeout=900)
        image = site.image(image_id)
        if image["status"] != "active":
            raise RuntimeError(f"image {image_id} is {image['status']}")
        available = time.monotonic() - t0
        image = site.wait_hashed(image_id, timeout=900)
        hashed = time.monotonic() - t0
    cpu = _cpu(pids) - cpu0
    log = site.glance.log_path.read_text()[glance_mark:]
    put = f"PUT /v2/images/{image_id}/file" in log
    assert image["checksum"] == md5, (backend, image["checksum"], md5)
    phases = re.search(
        rf"became image {image_id} .*?: Ceph ([\d.]+)s, Glance's location "
        r"([\d.]+)s",
        site.stack.service_log("cinder-volume").read_text(),
    )
    result = {
        "backend": backend,
        "phases_s": [float(x) for x in phases.groups()] if phases else None,
        "seconds": round(available, 2),
        "seconds_hashed": round(hashed, 2),
        "volume_host_bytes": meter.bytes,
        "glance_data_bytes": int(image["size"]) if put else 0,
        "cinder_volume_cpu_s": round(cpu, 2),
    }
    # free memstore's RAM for the next round
    demo.delete_volume(volume["id"])
    requests.delete(
        f"{site.glance.url}/v2/images/{image_id}",
        headers=site.admin_headers(),
        timeout=60,
    )
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--size-gib", type=int, default=4)
    parser.add_argument("--written-mib", type=int, default=512)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ceph-bench-") as tmp:
        base = Path(tmp)
        keystone = launcher.KeystoneServer(base / "keystone").start()
        rabbit = launcher.RabbitServer(base / "rabbit").start()
        site = CephSite(
            base / "site",
            keystone,
            rabbit.vhost_url("bench"),
            memstore_bytes=(args.size_gib + 4) * GIB,
        )
        results: list[dict[str, Any]] = []
        try:
            site.start()
            order = ["upstream", "ours"]
            for r in range(args.rounds):
                for backend in order if r % 2 == 0 else order[::-1]:
                    res = _one(
                        site,
                        backend,
                        args.size_gib,
                        args.written_mib * MIB,
                        seed=r + 1,
                    )
                    print(json.dumps(res), flush=True)
                    results.append(res)
        finally:
            site.stop()
            rabbit.stop()
            keystone.stop()
    summary = {}
    for backend in ("upstream", "ours"):
        rows = [r for r in results if r["backend"] == backend]
        summary[backend] = {
            key: statistics.median(r[key] for r in rows)
            for key in (
                "seconds",
                "seconds_hashed",
                "volume_host_bytes",
                "glance_data_bytes",
                "cinder_volume_cpu_s",
            )
        }
    summary["speedup"] = round(
        summary["upstream"]["seconds"] / summary["ours"]["seconds"], 2
    )
    summary["speedup_hashed"] = round(
        summary["upstream"]["seconds_hashed"]
        / summary["ours"]["seconds_hashed"],
        2,
    )
    out = Path(__file__).parent / "results" / "ceph_bench.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        json.dumps(
            {"args": vars(args), "runs": results, "median": summary}, indent=2
        )
        + "\n"
    )
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
