"""Event-loop stalls inside a real cinder-volume: upstream's upload path
against volume_image's StoreAwareDriver, side by side in one service.

One cinder-volume 29 serves backend ``upstream`` (the test file driver)
and ``ours`` (the same driver wrapped by StoreAwareDriver); each backend
process runs a hub ticker (a greenthread sleeping 10 ms, logging every
late wake-up).  Rounds alternate: a 1 GiB volume is uploaded (raw/bare,
store ``cheap``; ours verified) on one backend and then the other, and
during each upload a 1 GiB volume is created on the same backend and
timed.  Reported per method (medians over rounds): upload seconds; the
event loop's longest stall over the whole request, inside the driver's
``copy_volume_to_image`` (attach, transfer, detach) outside the side
create, and during the side create; and the side create's seconds.

    .venv/bin/python -m bench.cinder_stall [--rounds 3] [--size-gib 1]
        [--format raw/bare]

Writes ``bench/results/cinder_stall.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

from harness import launcher

MiB = 1 << 20
PATTERN = bytes(range(256)) * (MiB // 256)


def _stalls(
    path: Path,
    volume_id: str,
    request: tuple[float, float],
    side: tuple[float, float],
) -> dict[str, float]:
    """The longest lags (ms) the ticker logged: over the whole request,
    inside the driver's ``copy_volume_to_image`` outside the side
    create, and during the side create.
    """
    lags: list[tuple[float, float]] = []
    marks: dict[str, float] = {}
    for line in path.read_text().splitlines():
        fields = line.split()
        if len(fields) == 3 and fields[2] == volume_id:
            marks[fields[1]] = float(fields[0])
        elif len(fields) == 2:
            lags.append((float(fields[0]), float(fields[1])))

    def worst(
        lo: float, hi: float, skip: tuple[float, float] = (0, 0)
    ) -> float:
        # a line is written when its stall ends
        return max(
            (
                lag
                for stamp, lag in lags
                if lo <= stamp <= hi + 0.05
                and not (skip[0] <= stamp - lag / 1000 and stamp <= skip[1])
            ),
            default=0.0,
        )

    return {
        "max_stall_ms": worst(*request),
        "driver_stall_ms": worst(marks["begin"], marks["end"], side),
        "create_stall_ms": worst(*side),
    }


def _fill(path: Path, gib: int) -> None:
    with open(path, "r+b") as f:
        for _ in range(gib * 1024):
            f.write(PATTERN)


def _one(
    stack: launcher.CinderStack,
    backend: str,
    ticker: Path,
    gib: int,
    disk_format: str,
    container_format: str,
) -> dict[str, float]:
    rest = stack.rest()
    vtype = rest.backend_type(backend, {"image_service:store_id": "cheap"})
    vol = rest.create_volume(gib, volume_type=vtype["id"])
    rest.wait_volume(vol["id"])
    _fill(stack.volume_file(vol["id"]), gib)
    side: dict[str, float] = {}

    def side_create() -> None:
        time.sleep(1.0)  # well inside the upload
        side["start"] = time.time()
        t0 = time.monotonic()
        other = rest.create_volume(gib, volume_type=vtype["id"])
        rest.wait_volume(other["id"])
        side["seconds"] = time.monotonic() - t0
        side["end"] = time.time()
        rest.delete_volume(other["id"])

    helper = threading.Thread(target=side_create)
    start = time.time()
    t0 = time.monotonic()
    rest.upload_to_image(
        vol["id"],
        f"stall-{backend}",
        disk_format=disk_format,
        container_format=container_format,
    )
    helper.start()
    after = rest.wait_volume_leaves(vol["id"], "uploading", timeout=600)
    seconds = time.monotonic() - t0
    end = time.time()
    helper.join()
    assert after["status"] == "available", after
    rest.delete_volume(vol["id"])
    time.sleep(0.2)  # the ticker writes marks at its next wake-up
    return {
        "upload_s": seconds,
        **_stalls(
            ticker, vol["id"], (start, end), (side["start"], side["end"])
        ),
        "side_create_s": side["seconds"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size-gib", type=int, default=1)
    parser.add_argument("--format", default="raw/bare")
    args = parser.parse_args()
    disk_format, container_format = args.format.split("/")
    base = Path(tempfile.mkdtemp(prefix="vi-stall-"))
    tickers = {b: base / f"ticker-{b}.log" for b in ("upstream", "ours")}
    glance = launcher.GlanceServer(base / "glance", processes=1)
    rabbit = launcher.RabbitServer(base / "rabbit")
    glance.start()
    rabbit.start()
    stack = launcher.CinderStack(
        base / "cinder",
        glance.url,
        rabbit.transport_url,
        ours_driver="volume_image.cinder.driver.StoreAwareDriver",
        ours_wrapped_driver=launcher.FILE_DRIVER,
        with_filter=False,
        backend_options={
            b: {"file_volume_ticker_file": str(p)} for b, p in tickers.items()
        },
    )
    runs: dict[str, list[dict[str, float]]] = {"upstream": [], "ours": []}
    try:
        stack.start()
        for _ in range(args.rounds):
            for backend in ("upstream", "ours"):
                runs[backend].append(
                    _one(
                        stack,
                        backend,
                        tickers[backend],
                        args.size_gib,
                        disk_format,
                        container_format,
                    )
                )
                print(backend, runs[backend][-1], flush=True)
    finally:
        stack.stop()
        rabbit.stop()
        glance.stop()
    summary = {
        backend: {
            key: statistics.median(r[key] for r in rows)
            for key in (
                "upload_s",
                "max_stall_ms",
                "driver_stall_ms",
                "create_stall_ms",
                "side_create_s",
            )
        }
        | {"worst_stall_ms": max(r["max_stall_ms"] for r in rows)}
        for backend, rows in runs.items()
    }
    out = Path(__file__).parent / "results" / "cinder_stall.json"
    out.parent.mkdir(exist_ok=True)
    doc = {"format": args.format, "size_gib": args.size_gib}
    doc |= {"rounds": args.rounds, "runs": runs, "median": summary}
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(
        f"{'':10} upload s  stall ms: request (worst)  in driver  "
        "during create  side create s"
    )
    for backend, row in summary.items():
        print(
            f"{backend:10} {row['upload_s']:8.1f}  {row['max_stall_ms']:7.1f}"
            f" ({row['worst_stall_ms']:.1f})  {row['driver_stall_ms']:9.1f}"
            f"  {row['create_stall_ms']:13.1f}"
            f"  {row['side_create_s']:13.2f}"
        )


if __name__ == "__main__":
    main()
