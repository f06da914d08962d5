"""Upload benchmark: our pipeline against curl, ``glance image-upload`` and
openstacksdk.

Uploads the same file to the same real Glance store (``cheap``) in
alternating rounds, each method as its own client process, and reports the
medians of MB/s (wall time of the whole client process), client CPU
seconds per GiB and client peak RSS, each as a ratio to curl.

Our pipeline is timed end to end (create the image, stream, verify), as a
library call (``ours-verify``, ``ours-noverify``) and as the
``volume-image upload`` command (``ours-cli``); curl and the glance CLI
only for the ``PUT`` of an image created beforehand; openstacksdk's
``create_image`` end to end (it hashes the file first, md5 and sha256, as
it does by default; its PUT goes to the default store, as the SDK sends a
store only through image import). The sha512 floor (one hashlib pass,
page cache warm) is measured in the same run.

    .venv/bin/python -m bench.upload_bench [--size-mib 1024] [--rounds 3]
    .venv/bin/python -m bench.upload_bench --concurrency 1,2,4,8 \
        [-- --split-cores --methods curl,ours,ours-lib]

It writes the runs to ``bench/results/upload.json`` and the plot of the
docs' performance page to ``doc/source/_static/upload_bench.svg``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench import plot
from harness import launcher

MiB = 1024 * 1024

OURS = """
import sys
from keystoneauth1 import adapter, session
from volume_image import config
from volume_image.clients import glance
from volume_image.pipeline import uploader as upload
url, path, verify = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
client = glance.GlanceClient(
    adapter.Adapter(session.Session(timeout=60), endpoint_override=url))
settings = config.Settings(verify_upload=verify)
r = upload.Uploader(client, settings).upload(
    path, upload.ImageMeta("bench"), store_id="cheap")
print(r.image_id)
"""

# the same PUT with no HTTP library: a plain socket, the body sent from a
# reused buffer (``raw-send``: what requests and urllib3 cost per chunk)
# or by the kernel (``raw-sendfile``: what a zero-copy send would save)
RAW = """
import os, socket, sys, urllib.parse
url, path, image_id, mode = sys.argv[1:5]
u = urllib.parse.urlsplit(url)
size = os.path.getsize(path)
sock = socket.create_connection((u.hostname, u.port))
sock.sendall((
    f"PUT /v2/images/{image_id}/file HTTP/1.1\\r\\nHost: {u.netloc}\\r\\n"
    "Content-Type: application/octet-stream\\r\\n"
    "X-Image-Meta-Store: cheap\\r\\n"
    f"Content-Length: {size}\\r\\nConnection: close\\r\\n\\r\\n"
).encode())
with open(path, "rb", buffering=0) as f:
    if mode == "sendfile":
        sock.sendfile(f)
    else:
        buf = bytearray(1 << 20)
        view = memoryview(buf)
        while n := f.readinto(buf):
            sock.sendall(view[:n])
answer = b""
while chunk := sock.recv(65536):
    answer += chunk
status = answer.split(b" ", 2)[1]
assert status in (b"204", b"200"), answer[:200]
print(image_id)
"""

SDK = """
import sys
import openstack
url, path = sys.argv[1], sys.argv[2]
conn = openstack.connect(
    auth_type="none", auth={"endpoint": url}, image_endpoint_override=url,
    image_api_version="2",
)
image = conn.image.create_image(
    "bench", filename=path, disk_format="raw", container_format="bare",
    allow_duplicates=True, wait=True,
)
print(image.id)
"""


def _api(url: str, method: str, path: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(  # noqa: S310 - loopback Glance
        url + path,
        data=data,
        method=method,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req) as resp:  # noqa: S310
        text = resp.read()
    return json.loads(text) if text else {}


def _new_image(url: str) -> str:
    body = {"name": "bench", "disk_format": "raw", "container_format": "bare"}
    return str(_api(url, "POST", "/v2/images", body)["id"])


def _hwm_kib(pid: int) -> int | None:
    """The process's peak RSS so far (VmHWM), or None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _measure(cmd: list[str]) -> tuple[float, float, int, str]:
    """Run a client; return (wall s, CPU s, peak RSS KiB, stdout).

    Peak RSS is the child's own VmHWM, sampled until it exits:
    ru_maxrss of a child can report its parent's peak across fork/exec.
    """
    t0 = time.monotonic()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    peak = 0
    while True:
        # WNOHANG: sample VmHWM until the child exits, then take its rusage
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        hwm = _hwm_kib(proc.pid)
        if hwm is not None:
            peak = max(peak, hwm)
        time.sleep(0.02)
    proc.returncode = os.waitstatus_to_exitcode(status)
    out = proc.stdout.read() if proc.stdout else b""
    err = proc.stderr.read() if proc.stderr else b""
    wall = time.monotonic() - t0
    if proc.returncode:
        raise RuntimeError(f"{cmd[0]} failed: {err.decode()[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime, peak, out.decode()


def _sha512_floor(path: Path) -> float:
    """CPU-s per GiB of one sha512 pass over ``path``."""
    import hashlib

    digest = hashlib.sha512()
    t0 = time.process_time()
    with open(path, "rb") as f:
        while chunk := f.read(MiB):
            digest.update(chunk)
    return (time.process_time() - t0) / (path.stat().st_size / (1024 * MiB))


def run_method(method: str, url: str, path: Path, glance_bin: Path) -> dict:
    image_id = None
    if method in ("curl", "glance", "raw-send", "raw-sendfile"):
        image_id = _new_image(url)
    if method == "ours-verify":
        cmd = [sys.executable, "-c", OURS, url, str(path), "1"]
    elif method == "ours-noverify":
        cmd = [sys.executable, "-c", OURS, url, str(path), "0"]
    elif method == "ours-cli":
        cmd = [
            sys.executable, "-m", "volume_image.cli.main",
            "--os-auth-type", "none", "--os-endpoint", url,
            "upload", str(path), "--name", "bench", "--store-id", "cheap",
            "--format", "json",
        ]  # fmt: skip
    elif method in ("raw-send", "raw-sendfile"):
        mode = method.split("-")[1]
        cmd = [sys.executable, "-c", RAW, url, str(path), str(image_id), mode]
    elif method == "sdk":
        sdk = launcher.ensure_venv("clients") / "bin" / "python"
        cmd = [str(sdk), "-c", SDK, url, str(path)]
    elif method == "curl":
        cmd = [
            "curl",
            "-sS",
            "-f",
            "-X",
            "PUT",
            "-T",
            str(path),
            "-H",
            "Expect:",
            "-H",
            "Content-Type: application/octet-stream",
            "-H",
            "X-Image-Meta-Store: cheap",
            f"{url}/v2/images/{image_id}/file",
        ]
    else:
        cmd = [
            str(glance_bin),
            "--os-image-url",
            url,
            "--os-auth-token",
            "x",
            "image-upload",
            "--store",
            "cheap",
            "--file",
            str(path),
            str(image_id),
        ]
    wall, cpu, rss, out = _measure(cmd)
    if image_id is None and method == "ours-cli":
        image_id = json.loads(out)["image_id"]
    elif image_id is None:
        image_id = out.strip().splitlines()[-1]
    image = _api(url, "GET", f"/v2/images/{image_id}")
    size = path.stat().st_size
    if image["status"] != "active" or image["size"] != size:
        raise RuntimeError(f"{method}: bad image {image}")
    _api(url, "DELETE", f"/v2/images/{image_id}")
    return {
        "method": method,
        "mb_s": size / wall / 1e6,
        "cpu_s_per_gib": cpu / (size / (1024 * MiB)),
        "rss_mib": rss / 1024,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--plot", type=Path, default=plot.DEFAULT_OUT)
    parser.add_argument(
        "--methods",
        default="ours-verify,ours-noverify,ours-cli,curl,glance,sdk",
        help="comma-separated; also raw-send and raw-sendfile (a plain "
        "socket PUT: what the HTTP library and a zero-copy send change)",
    )
    parser.add_argument(
        "--concurrency",
        metavar="N,N,...",
        help="the concurrency mode instead: N uploads at once against a "
        "4-worker Glance on MariaDB (bench.concurrency_bench; give its "
        "other options after --)",
    )
    args, rest = parser.parse_known_args(argv)
    if args.concurrency:
        from bench import concurrency_bench

        concurrency_bench.main(
            [
                "--n",
                args.concurrency,
                "--size-mib",
                str(args.size_mib),
                "--rounds",
                str(args.rounds),
                *[a for a in rest if a != "--"],
            ]
        )
        return 0
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")

    base = Path(tempfile.mkdtemp(prefix="volume-image-bench-"))
    data = base / "volume.raw"
    with open(data, "wb") as f:
        for _ in range(args.size_mib):
            f.write(os.urandom(MiB))
    small = base / "small.raw"
    with open(small, "wb") as f:
        f.write(os.urandom(64 * MiB))
    server = launcher.GlanceServer(base / "glance", processes=2)
    server.start()
    glance_bin = server.venv() / "bin" / "glance"
    methods = args.methods.split(",")
    runs: list[dict] = []
    try:
        for r in range(args.rounds):
            # rotate the order so no method always runs first
            order = methods[r % len(methods) :] + methods[: r % len(methods)]
            for method in order:
                run = run_method(method, server.url, data, glance_bin)
                run["round"] = r
                runs.append(run)
                print(
                    f"round {r} {method:14} {run['mb_s']:7.1f} MB/s "
                    f"{run['cpu_s_per_gib']:5.2f} CPU-s/GiB "
                    f"{run['rss_mib']:6.1f} MiB RSS",
                    flush=True,
                )
        flat = [run_method("ours-verify", server.url, small, glance_bin)]
        floor = _sha512_floor(data)
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
    summary = {}
    for m in methods:
        mine = [x for x in runs if x["method"] == m]
        summary[m] = {
            k: statistics.median(x[k] for x in mine)
            for k in ("mb_s", "cpu_s_per_gib", "rss_mib")
        }
    curl = summary["curl"]
    print(
        f"\nmedians over {args.rounds} rounds, {args.size_mib} MiB random "
        "file, store 'cheap', ratios to curl:"
    )
    print(
        f"{'method':14} {'MB/s':>8} {'ratio':>6} {'CPU-s/GiB':>10} "
        f"{'ratio':>6} {'RSS MiB':>8} {'ratio':>6}"
    )
    for m, s in summary.items():
        print(
            f"{m:14} {s['mb_s']:8.1f} {s['mb_s'] / curl['mb_s']:6.2f} "
            f"{s['cpu_s_per_gib']:10.2f} "
            f"{s['cpu_s_per_gib'] / curl['cpu_s_per_gib']:6.2f} "
            f"{s['rss_mib']:8.1f} {s['rss_mib'] / curl['rss_mib']:6.2f}"
        )
    print(f"sha512 floor: {floor:.2f} CPU-s/GiB")
    print(
        f"peak RSS of our pipeline: {flat[0]['rss_mib']:.1f} MiB for 64 MiB, "
        f"{summary['ours-verify']['rss_mib']:.1f} MiB for {args.size_mib} MiB"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    results = args.out / "upload.json"
    results.write_text(
        json.dumps(
            {
                "runs": runs,
                "summary": summary,
                "small": flat,
                "sha512_floor": floor,
                "size_mib": args.size_mib,
                "rounds": args.rounds,
            },
            indent=2,
        )
    )
    # the docs' performance page shows this plot
    return plot.main([str(results), str(args.plot)])


if __name__ == "__main__":
    sys.exit(main())
