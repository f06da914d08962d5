"""Source inspection and the checks around qemu-img, on real images made
with qemu-img.
"""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from volume_image import errors
from volume_image.pipeline import confine, convert


def qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


@pytest.fixture
def images(tmp_path: Path) -> dict[str, Path]:
    host = tmp_path / "host-secret"
    host.write_bytes(b"HOST SECRET" * 1000)
    made = {
        "raw": tmp_path / "v.raw",
        "qcow2": tmp_path / "v.qcow2",
        "backing": tmp_path / "backing.qcow2",
        "datafile": tmp_path / "datafile.qcow2",
    }
    qemu_img("create", "-f", "raw", str(made["raw"]), "4M")
    qemu_img("create", "-f", "qcow2", str(made["qcow2"]), "4M")
    qemu_img(
        "create", "-f", "qcow2", "-b", str(host), "-F", "raw",
        str(made["backing"]),
    )  # fmt: skip
    qemu_img(
        "create", "-f", "qcow2", "-o", f"data_file={host}",
        str(made["datafile"]), "4M",
    )  # fmt: skip
    return made


@pytest.mark.parametrize(
    ("name", "fmt", "match"),
    [
        ("backing", "qcow2", "backing_file"),
        ("datafile", "qcow2", "data_file"),
        ("qcow2", "vmdk", "its content is qcow2"),
        ("raw", "qcow2", "its content is raw"),
        ("qcow2", "qed", "not one we inspect"),
    ],
)
def test_unsafe_sources_are_refused(
    images: dict[str, Path], name: str, fmt: str, match: str
) -> None:
    with pytest.raises(errors.UnsafeSource, match=match):
        convert.check_format(images[name], fmt)


def test_safe_sources_pass(images: dict[str, Path]) -> None:
    convert.check_format(images["qcow2"], "qcow2")
    # raw has no header to trust: anything passes as raw
    convert.check_format(images["backing"], "raw")


def test_conversion_refuses_a_backing_file_before_qemu_img(
    images: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: list[list[str]] = []
    monkeypatch.setattr(convert, "_run", lambda cmd, *a: ran.append(cmd))
    with pytest.raises(errors.UnsafeSource):
        convert.convert(images["backing"], "qcow2", "raw", tmp_path)
    assert ran == []


def test_output_check_can_fail(
    images: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a qemu-img that writes qcow2 whatever it is asked for
    real = convert._run

    def wrong_format(cmd: list[str], *args: Any, **kw: Any) -> bytes:
        if "convert" not in cmd:
            return real(cmd, *args, **kw)
        qemu_img("create", "-f", "qcow2", cmd[-1], "4M")
        return b""

    monkeypatch.setattr(convert, "_run", wrong_format)
    with pytest.raises(errors.ConversionError, match="does not pass as vmdk"):
        convert.convert(images["raw"], "raw", "vmdk", tmp_path)


@pytest.mark.parametrize("disk_format", sorted(convert.CONVERTIBLE_FORMATS))
def test_every_target_format_passes_its_check(
    images: dict[str, Path], tmp_path: Path, disk_format: str
) -> None:
    out = convert.convert(images["qcow2"], "qcow2", disk_format, tmp_path)
    assert out.stat().st_size > 0


def test_qemu_img_info_runs_under_limits(images: dict[str, Path]) -> None:
    info = convert.qemu_img_info(images["qcow2"], "qcow2")
    assert info.virtual_size == 4 * 1024 * 1024
    # Cinder's defaults: image_introspection_cpu_limit 60 s and
    # image_introspection_address_space_limit 1 GiB
    assert convert.QEMU_IMG_LIMITS == {
        "cpu_time": 60,
        "address_space": 1024**3,
    }
    with pytest.raises(errors.ConversionError, match="qemu-img info failed"):
        convert.qemu_img_info(images["raw"], "qcow2")


def test_the_given_limits_bind_qemu_img_info(
    images: dict[str, Path], tmp_path: Path
) -> None:
    # 1 MiB of address space: qemu-img cannot even start
    tiny = {"cpu_time": 60, "address_space": 1024 * 1024}
    with pytest.raises(errors.ConversionError, match="qemu-img info failed"):
        convert.qemu_img_info(images["qcow2"], "qcow2", tiny)
    with pytest.raises(errors.ConversionError, match="qemu-img info failed"):
        convert.convert(images["qcow2"], "qcow2", "raw", tmp_path, limits=tiny)


def test_qcow2_is_compressed_when_asked(tmp_path: Path) -> None:
    raw = tmp_path / "v.raw"
    raw.write_bytes(b"volume_image" * (8 * 1024 * 1024 // 12))
    for sub in "abc":
        (tmp_path / sub).mkdir()
    plain = convert.convert(raw, "raw", "qcow2", tmp_path / "a")
    packed = convert.convert(
        raw, "raw", "qcow2", tmp_path / "b", compress=True
    )
    assert packed.stat().st_size * 10 < plain.stat().st_size
    subprocess.run(
        ["qemu-img", "compare", "-f", "raw", "-F", "qcow2", str(raw),
         str(packed)],
        check=True, capture_output=True,
    )  # fmt: skip
    # other formats have no compressed clusters: compress is ignored
    vmdk = convert.convert(raw, "raw", "vmdk", tmp_path / "c", compress=True)
    assert vmdk.stat().st_size > 0


def test_conversion_failure_and_cancel(
    images: dict[str, Path], tmp_path: Path
) -> None:
    with pytest.raises(errors.ConversionError, match="exit 1"):
        convert._run(["qemu-img", "convert", "-f", "vdi", "/nope", "/x"],
                     tmp_path, None)  # fmt: skip
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(errors.UploadCancelled):
        convert._run(["sleep", "5"], tmp_path, cancel)


def _evil(tmp_path: Path, kind: str, size: str) -> tuple[bytes, Path]:
    """A qcow2 that reads ``HOST SECRET`` from a host file when qemu-img
    follows it: an external data file, or a backing file.
    """
    host = tmp_path / f"host-{kind}"
    host.write_bytes(b"\0" * 4 * 1024 * 1024)
    evil = tmp_path / f"evil-{kind}.qcow2"
    if kind == "datafile":
        qemu_img(
            "create", "-f", "qcow2", "-o",
            f"data_file={host},data_file_raw=on,preallocation=metadata",
            str(evil), size,
        )  # fmt: skip
    else:
        qemu_img("create", "-f", "qcow2", "-b", str(host), "-F", "raw",
                 str(evil), size)  # fmt: skip
    host.write_bytes(b"HOST SECRET" * 100_000)
    return evil.read_bytes(), host


@pytest.mark.parametrize("kind", ["datafile", "backing"])
@pytest.mark.parametrize("landlock", ["kernel", "copy"])
def test_a_header_rewritten_after_inspection_reaches_no_host_file(
    images: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
    landlock: str,
) -> None:
    """The volume's writer swaps a clean qcow2 header for one naming a
    host file after the inspection and ``qemu-img info``, right before
    ``qemu-img convert`` starts: it must never read the host file.
    """
    if landlock == "copy":
        monkeypatch.setattr(confine, "available", lambda: False)
    evil, _ = _evil(tmp_path, kind, "4M")
    source = images["qcow2"]
    real = convert._run

    def swap_then_run(cmd: list[str], *args: Any, **kw: Any) -> Any:
        if "convert" in cmd:
            with open(source, "r+b") as out:  # the same inode
                out.write(evil)
                out.truncate()
        return real(cmd, *args, **kw)

    monkeypatch.setattr(convert, "_run", swap_then_run)
    work = tmp_path / "work"
    work.mkdir()
    try:
        out = convert.convert(source, "qcow2", "raw", work)
    except errors.ConversionError as exc:
        assert "HOST SECRET" not in str(exc)
    else:
        assert b"HOST SECRET" not in out.read_bytes()


def test_qemu_img_info_runs_under_the_prlimit(
    images: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What qemu-img itself sees: Cinder's CPU and address-space caps."""
    fake = tmp_path / "bin" / "qemu-img"
    fake.parent.mkdir()
    fake.write_text(
        '#!/bin/sh\necho "cpu=$(ulimit -t) as=$(ulimit -v)" >&2\nexit 1\n'
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    # a program outside /usr cannot be run under the Landlock rules
    monkeypatch.setattr(confine, "available", lambda: False)
    with pytest.raises(errors.ConversionError) as caught:
        convert.qemu_img_info(images["qcow2"], "qcow2")
    assert "cpu=60 as=1048576" in str(caught.value)


def test_stale_workdir_sweep_survives_hostile_names(tmp_path: Path) -> None:
    """Any local user can name directories in a shared conversion_dir:
    only make_workdir's names whose process is gone are removed, and no
    name breaks the sweep (it runs at every upload and at do_setup).
    """
    gone = subprocess.Popen(["true"])
    gone.wait()
    dead = tmp_path / f"volume_image-{gone.pid}-abc"
    live = convert.make_workdir(str(tmp_path))
    hostile = [
        "volume_image-99999999999999999999-x",
        "volume_image-\u00b2-x",
        "volume_image-\u0663-x",  # an Arabic-Indic digit: int() takes it
        "volume_image-0-x",
        "volume_image--x",
    ]
    for name in [dead.name, *hostile]:
        (tmp_path / name).mkdir()
    (tmp_path / f"volume_image-{gone.pid}-file").write_text("")
    assert convert.sweep_stale_workdirs(str(tmp_path)) == [dead]
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(
        [live.name, *hostile, f"volume_image-{gone.pid}-file"]
    )
