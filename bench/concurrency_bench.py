"""Concurrent uploads against the production-shaped Glance: ours against
``curl -T``.

Glance 33 runs with 4 uWSGI workers on MariaDB (the harness's
``MariaDBServer`` and ``GlanceServer``).  For N = 1, 2, 4 and 8, each
method starts N client processes at once, each uploading the same random
file to store ``cheap``; the methods alternate, the order flipping every
round.  Ours is the ``volume-image upload`` command end to end (image
create, stream, verify), and ``ours-nv`` the same with
``verify_upload = false`` (nothing hashed); ``ours-lib`` is N verified
uploads in one process, N threads, as cinder-volume runs them; curl only
PUTs into an image created beforehand.  Reported per N and method
(medians over rounds): aggregate MB/s (N x size / wall time of the
round), client CPU-s per GiB (all N processes), and failures (a
non-zero exit or an image not ``active``).
The hashlib floor of one sha512 pass is measured in the same run, and
so is Glance's own CPU per GiB (its uWSGI master and workers).

On one small machine the clients and Glance share the cores, unlike a
volume host and a Glance host.  ``--split-cores`` gives each side its own:
Glance and MariaDB on the last core, the clients on the others, so a
client's CPU no longer slows Glance down.

    .venv/bin/python -m bench.concurrency_bench [--size-mib 256]
        [--rounds 2] [--n 1,2,4,8] [--split-cores]
        [--methods curl,ours,ours-nv,ours-lib]

Writes ``bench/results/concurrency.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.upload_bench import _api, _sha512_floor
from harness import launcher

MiB = 1 << 20
GiB = 1 << 30


def _command(method: str, url: str, path: Path) -> tuple[list[str], str]:
    if method.startswith("ours"):
        conf = path.parent / "noverify.conf"
        conf.write_text("[volume_image]\nverify_upload = false\n")
        extra = ["--config-file", str(conf)] if method == "ours-nv" else []
        return [
            sys.executable, "-m", "volume_image.cli.main", *extra,
            "--os-auth-type", "none", "--os-endpoint", url,
            "upload", str(path), "--name", "bench-n",
            "--store-id", "cheap", "--format", "json",
        ], ""  # fmt: skip
    image_id = str(
        _api(url, "POST", "/v2/images", {
            "name": "bench-n", "disk_format": "raw",
            "container_format": "bare",
        })["id"]
    )  # fmt: skip
    return [
        "curl", "-sS", "-f", "-X", "PUT", "-T", str(path),
        "-H", "Expect:", "-H", "Content-Type: application/octet-stream",
        "-H", "X-Image-Meta-Store: cheap",
        f"{url}/v2/images/{image_id}/file",
    ], image_id  # fmt: skip


def _cpu_of(pids: list[int]) -> float:
    """CPU seconds (user + system) the processes ``pids`` have used."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def _tree(pid: int) -> list[int]:
    """``pid`` and its children (a uWSGI master and its workers)."""
    out = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(pid)],
        capture_output=True, text=True, check=False,
    ).stdout  # fmt: skip
    return [pid, *(int(p) for p in out.split())]


def _threads(n: int, url: str, path: str) -> None:
    """``ours-lib``: N uploads at once in this one process, each in its
    own thread, as cinder-volume runs them (one process, N green
    threads); prints the image ids as JSON.
    """
    import threading

    from keystoneauth1 import adapter, session

    from volume_image import GlanceClient, ImageMeta, Settings, Uploader

    client = GlanceClient(
        adapter.Adapter(session.Session(timeout=60), endpoint_override=url)
    )
    uploader = Uploader(client, Settings(max_concurrent_uploads=n))
    ids: list[str] = []

    def one() -> None:
        result = uploader.upload(path, ImageMeta("bench-n"), store_id="cheap")
        ids.append(result.image_id)

    workers = [threading.Thread(target=one) for _ in range(n)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    print(json.dumps(ids))


def _round(
    method: str, n: int, url: str, path: Path, server: list[int]
) -> dict[str, float]:
    """N clients of ``method`` at once (``ours-lib``: one process with N
    threads).
    """
    if method == "ours-lib":
        cmds = [
            (
                [sys.executable, "-m", "bench.concurrency_bench",
                 "--threads", str(n), "--url", url, str(path)],
                "",
            )
        ]  # fmt: skip
    else:
        cmds = [_command(method, url, path) for _ in range(n)]
    server_cpu = _cpu_of(server)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    t0 = time.monotonic()
    procs = [
        (
            subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env
            ),
            image_id,
        )
        for cmd, image_id in cmds
    ]
    cpu = 0.0
    failures = 0
    images = []
    for proc, image_id in procs:
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        cpu += usage.ru_utime + usage.ru_stime
        out = proc.stdout.read() if proc.stdout else b""
        if proc.returncode:
            failures += 1
            continue
        if method == "ours-lib":
            images.extend(json.loads(out))
            continue
        if method.startswith("ours"):
            image_id = json.loads(out)["image_id"]
        images.append(image_id)
    wall = time.monotonic() - t0
    server_cpu = _cpu_of(server) - server_cpu
    size = path.stat().st_size
    for image_id in images:
        image = _api(url, "GET", f"/v2/images/{image_id}")
        if image["status"] != "active" or image["size"] != size:
            failures += 1
        _api(url, "DELETE", f"/v2/images/{image_id}")
    return {
        "mb_s": n * size / wall / 1e6,
        "cpu_s_per_gib": cpu / (n * size / GiB),
        "server_cpu_s_per_gib": server_cpu / (n * size / GiB),
        "failures": failures,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--n", default="1,2,4,8")
    parser.add_argument(
        "--split-cores",
        action="store_true",
        help="Glance and MariaDB on the last core, the clients on the rest",
    )
    parser.add_argument("--methods", default="curl,ours,ours-nv,ours-lib")
    parser.add_argument("--threads", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("path", nargs="?", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        _threads(args.threads, args.url, args.path)
        return
    methods = args.methods.split(",")
    cores = sorted(os.sched_getaffinity(0))
    if args.split_cores and len(cores) < 2:
        parser.error("--split-cores needs two cores")
    counts = [int(x) for x in args.n.split(",")]
    base = Path(tempfile.mkdtemp(prefix="vi-conc-"))
    data = base / "volume.raw"
    with open(data, "wb") as f:
        for _ in range(args.size_mib):
            f.write(os.urandom(MiB))
    db = launcher.MariaDBServer(base / "mariadb")
    db.start()
    glance = launcher.GlanceServer(
        base / "glance", processes=4, database_url=db.database_url()
    )
    runs: list[dict] = []
    try:
        glance.start()
        assert glance.pid is not None and db.pid is not None
        server = _tree(glance.pid)
        if args.split_cores:
            for pid in [*server, db.pid]:
                os.sched_setaffinity(pid, {cores[-1]})
            # the clients are started from here, and inherit it
            os.sched_setaffinity(0, set(cores[:-1]))
        floor = _sha512_floor(data)
        for r in range(args.rounds):
            for n in counts:
                order = list(methods)
                if (r + n) % 2:
                    order.reverse()
                for method in order:
                    run = _round(method, n, glance.url, data, server)
                    run |= {"method": method, "n": n, "round": r}
                    runs.append(run)
                    print(run, flush=True)
    finally:
        glance.stop()
        db.stop()
    summary: dict[str, dict[str, float]] = {}
    print(
        f"\nsha512 floor: {floor:.2f} CPU-s/GiB"
        f"{' (split cores)' if args.split_cores else ''}"
    )
    print(f"{'N':>2} {'method':6} {'MB/s':>7} {'ratio':>6} {'CPU-s/GiB':>10}"
          f" {'ratio':>6} {'Glance':>7} failures")  # fmt: skip
    for n in counts:
        for method in methods:
            mine = [x for x in runs if x["n"] == n and x["method"] == method]
            summary[f"{method}-{n}"] = {
                "mb_s": statistics.median(x["mb_s"] for x in mine),
                "cpu_s_per_gib": statistics.median(
                    x["cpu_s_per_gib"] for x in mine
                ),
                "server_cpu_s_per_gib": statistics.median(
                    x["server_cpu_s_per_gib"] for x in mine
                ),
                "failures": sum(x["failures"] for x in mine),
            }
        curl = summary[f"curl-{n}"]
        for method in methods:
            row = summary[f"{method}-{n}"]
            print(
                f"{n:>2} {method:6} {row['mb_s']:7.1f} "
                f"{row['mb_s'] / curl['mb_s']:6.2f} "
                f"{row['cpu_s_per_gib']:10.2f} "
                f"{row['cpu_s_per_gib'] / curl['cpu_s_per_gib']:6.2f} "
                f"{row['server_cpu_s_per_gib']:7.2f} "
                f"{row['failures']:.0f}"
            )
    name = "concurrency-split.json" if args.split_cores else "concurrency.json"
    out = Path(__file__).parent / "results" / name
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        json.dumps(
            {"size_mib": args.size_mib, "rounds": args.rounds,
             "split_cores": args.split_cores,
             "sha512_floor": floor, "runs": runs, "summary": summary},
            indent=2,
        ) + "\n"
    )  # fmt: skip


if __name__ == "__main__":
    main()
