"""The README demo: the main job of volume_image against a local Glance.

Starts a Glance 33 with stores ``fast`` (default), ``cheap`` and ``web``
(read-only), then runs the ``volume-image`` command as an operator would:
list the stores, validate good and bad extra specs, make a small sample
volume, upload it once to a named store and once with no spec, and show
where each image landed.  Glance is stopped at the end.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

from harness import launcher


def _run(
    cmd: list[str], env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    shown = ["volume-image", *cmd]
    print(f"\n$ {shlex.join(shown)}", flush=True)
    proc = subprocess.run(
        [sys.executable, "-m", "volume_image.cli.main", *cmd],
        env=env,
        text=True,
        capture_output=True,
        check=False,
    )
    sys.stdout.write(proc.stdout)
    sys.stdout.write(proc.stderr)
    print(f"(exit code {proc.returncode})", flush=True)
    return proc


def _make_volume(path: Path) -> None:
    """A 64 MiB sparse volume with 4 MiB of data at its start."""
    with open(path, "wb") as f:
        f.write(os.urandom(4 * 1024 * 1024))
        f.truncate(64 * 1024 * 1024)


def main() -> int:
    """Run the demo; return 0 when every step behaved as shown."""
    base = Path(tempfile.mkdtemp(prefix="volume-image-demo-"))
    print(
        "Starting Glance 33 (stores: fast=default, cheap, web=read-only) "
        f"in {base}"
    )
    server = launcher.GlanceServer(base / "glance")
    server.start()
    print(f"Glance is up on {server.url} in {server.startup_seconds:.1f}s")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    # a token-less Glance: no Keystone in the demo
    env.update(OS_AUTH_TYPE="none", OS_ENDPOINT=server.url)
    failures = []

    def expect(cmd: list[str], code: int) -> subprocess.CompletedProcess[str]:
        proc = _run(cmd, env)
        if proc.returncode != code:
            failures.append(
                f"{shlex.join(cmd)}: exit {proc.returncode}, expected {code}"
            )
        return proc

    try:
        print("\n== Stores Glance offers")
        expect(["stores"], 0)

        print("\n== Validating extra specs before 'openstack volume type set'")
        expect(
            [
                "validate",
                "image_service:store_id=cheap",
                "volume_backend_name=lvm",
            ],
            0,
        )
        expect(["validate", "image_service:store_id=chep"], 3)
        expect(["validate", "image_service:store_id=web"], 3)
        expect(
            ["validate", "image_service:store_id=os_glance_staging_store"], 3
        )
        expect(["validate", "Image_Service:Store_Id= cheap"], 3)
        expect(["validate", "image_service:storeid=cheap"], 3)

        volume = base / "volume-1.raw"
        _make_volume(volume)
        print(f"\n== Sample volume: {volume} (64 MiB, sparse, 4 MiB of data)")

        print("\n== Upload to the store the volume type names")
        named = expect(
            [
                "upload",
                str(volume),
                "--name",
                "demo-cheap",
                "--extra-spec",
                "image_service:store_id=cheap",
                "--format",
                "json",
            ],
            0,
        )
        print("\n== Upload with no store spec: Glance's default store")
        default = expect(
            [
                "upload",
                str(volume),
                "--name",
                "demo-default",
                "--format",
                "json",
            ],
            0,
        )
        print("\n== A read-only store is refused before anything is created")
        expect(
            ["upload", str(volume), "--name", "demo-web", "--store-id", "web"],
            3,
        )

        print("\n== Where each image landed")
        for proc in (named, default):
            if proc.returncode:
                continue
            result = json.loads(proc.stdout)
            with urllib.request.urlopen(  # noqa: S310 - our loopback Glance
                f"{server.url}/v2/images/{result['image_id']}"
            ) as resp:
                image = json.load(resp)
            on_disk = [
                store
                for store in ("fast", "cheap")
                if (server.store_dir(store) / image["id"]).exists()
            ]
            print(
                f"  {image['name']:<13} status={image['status']} "
                f"stores={image['stores']} file in store dir(s): "
                f"{','.join(on_disk)} size={image['size']} "
                f"checksum={image['checksum']}"
            )
        with urllib.request.urlopen(f"{server.url}/v2/images") as resp:  # noqa: S310
            names = sorted(i["name"] for i in json.load(resp)["images"])
        print(f"  images in Glance: {', '.join(names)} (no 'demo-web')")
        if "demo-web" in names:
            failures.append("an image was created for the read-only store")
    finally:
        server.stop()
        # keep only Glance's log: the volume and the images are 64 MiB each
        for junk in (base / "volume-1.raw", server.base / "stores"):
            if junk.is_dir():
                shutil.rmtree(junk, ignore_errors=True)
            else:
                junk.unlink(missing_ok=True)
        print(f"\nGlance stopped. Its log: {server.log_path}")
    if failures:
        print("\nDEMO FAILED:\n  " + "\n  ".join(failures))
        return 1
    print("\nDemo finished: every step behaved as expected.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
