"""Overhead of the store_validation filter in a real cinder-api 29.

Two cinder-api servers (uWSGI, one worker each) ask the same Glance 33:
one with upstream's pipeline, one with our filter (default settings: the
store catalog is cached for 60 s).  Requests go to both in alternation,
one at a time, so the machine's noise hits both alike.  Reported: the
median and 90th percentile latency of each request kind, and the ratio
filter / upstream of the medians.

* pass-through: ``GET /types/{id}``, which the filter only path-matches;
* write without a store: ``POST .../extra_specs`` with a backend spec,
  which the filter reads and parses;
* validated write: ``POST .../extra_specs`` with
  ``image_service:store_id = cheap``, checked by the filter against its
  cached catalog and then by Cinder itself (one Glance call).

    .venv/bin/python -m bench.filter_bench [--requests 300]
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import tempfile
import time
from pathlib import Path

from harness import launcher

KEY = "image_service:store_id"


class Api:
    def __init__(self, server: launcher.CinderServer) -> None:
        self.server = server
        self.prefix = f"/v3/{launcher.PROJECT_ID}"
        self.headers = dict(
            server.headers, **{"Content-Type": "application/json"}
        )

    def call(self, method: str, path: str, body: object = None) -> float:
        """One request on a new connection (cinder closes each); seconds."""
        data = None if body is None else json.dumps(body).encode()
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port)
        t0 = time.perf_counter()
        conn.request(method, self.prefix + path, data, self.headers)
        resp = conn.getresponse()
        payload = resp.read()
        elapsed = time.perf_counter() - t0
        conn.close()
        if resp.status != 200:
            raise RuntimeError(f"{method} {path}: {resp.status} {payload!r}")
        return elapsed

    def new_type(self, name: str) -> str:
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port)
        body = json.dumps({"volume_type": {"name": name}}).encode()
        conn.request("POST", self.prefix + "/types", body, self.headers)
        doc = json.loads(conn.getresponse().read())
        conn.close()
        return str(doc["volume_type"]["id"])


def _store_calls(glance: launcher.GlanceServer) -> int:
    log = glance.log_path.read_text(errors="replace")
    return sum(
        1
        for line in log.splitlines()
        if "/v2/info/stores" in line and "=>" in line
    )


def _stats(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p90 = ordered[int(0.9 * (len(ordered) - 1))]
    return statistics.median(ordered) * 1000, p90 * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="filter-bench-") as tmp:
        base = Path(tmp)
        glance = launcher.GlanceServer(base / "glance", processes=1)
        glance.start()
        upstream = launcher.CinderServer(
            base / "upstream", glance.url, with_filter=False
        )
        filtered = launcher.CinderServer(base / "filtered", glance.url)
        try:
            upstream.start()
            filtered.start()
            apis = {"upstream": Api(upstream), "filter": Api(filtered)}
            type_ids = {k: a.new_type("bench") for k, a in apis.items()}
            kinds = {
                "pass-through GET /types/{id}": ("GET", "/types/{id}", None),
                "write without a store": (
                    "POST",
                    "/types/{id}/extra_specs",
                    {"extra_specs": {"volume_backend_name": "lvm"}},
                ),
                "validated write (cached catalog)": (
                    "POST",
                    "/types/{id}/extra_specs",
                    {"extra_specs": {KEY: "cheap"}},
                ),
            }
            print(
                f"{args.requests} requests of each kind to each server, "
                "alternating; latency in ms"
            )
            print(
                f"{'request':34} {'upstream p50/p90':>17} "
                f"{'filter p50/p90':>16} {'ratio p50':>9}"
            )
            for label, (method, path, body) in kinds.items():
                samples: dict[str, list[float]] = {k: [] for k in apis}
                for name, api in apis.items():  # warm-up, fills the cache
                    api.call(method, path.format(id=type_ids[name]), body)
                before = _store_calls(glance)
                for _ in range(args.requests):
                    for name, api in apis.items():
                        samples[name].append(
                            api.call(
                                method, path.format(id=type_ids[name]), body
                            )
                        )
                up50, up90 = _stats(samples["upstream"])
                f50, f90 = _stats(samples["filter"])
                calls = _store_calls(glance) - before
                print(
                    f"{label:34} {up50:8.2f}/{up90:<8.2f} "
                    f"{f50:7.2f}/{f90:<8.2f} {f50 / up50:8.3f}x"
                    f"   Glance store-list calls: {calls}"
                )
        finally:
            filtered.stop()
            upstream.stop()
            glance.stop()


if __name__ == "__main__":
    main()
