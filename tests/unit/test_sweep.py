"""How the sweep knows an image is ours and its upload dead: selection,
upload records, and the command over requests-mock.
"""

from __future__ import annotations

import datetime
import io
import json
import multiprocessing
import os
import socket
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests_mock

from volume_image.cli import main as cli
from volume_image.core import sweep
from volume_image.pipeline import records

NOW = datetime.datetime(2026, 11, 30, 12, 0, tzinfo=datetime.timezone.utc)
HERE = "h1"
URL = "http://glance.test:9292"


def stamp(minutes: float) -> str:
    when = NOW - datetime.timedelta(minutes=minutes)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def image(
    status: str = "saving",
    created: float = 120,
    host: str = HERE,
    **props: object,
) -> dict[str, object]:
    image_id = str(uuid.uuid4())
    return {
        "id": image_id,
        "name": "n",
        "status": status,
        "created_at": stamp(created),
        "updated_at": stamp(created),
        "owner": "p1",
        sweep.HOST_TAG: host,
        sweep.PID_TAG: "42",
        sweep.MARK: image_id,
        **props,
    }


def pick(
    images: list[dict[str, object]],
    records_: dict[str, str] | None = None,
    host: str | None = None,
    older_than: float = 3600,
) -> list[str]:
    found = sweep.select(
        images,
        older_than=older_than,
        now=NOW,
        records=records_ or {},
        this_host=HERE,
        project="p1",
        host=host,
    ).found
    return [str(item.image_id) for item in found]


def test_this_hosts_images_need_a_record_whose_lock_is_free() -> None:
    dead, live, unrecorded = image(), image(), image()
    active = image(status="active")
    young = image(created=5)
    state = {
        str(dead["id"]): sweep.RECORD,
        str(live["id"]): sweep.RUNNING,
        str(active["id"]): sweep.RECORD,
        str(young["id"]): sweep.RECORD,
    }
    images = [dead, live, unrecorded, active, young]
    assert pick(images, state) == [dead["id"]]
    # a live upload is never taken, whatever its age or --older-than
    assert live["id"] not in pick(images, state, older_than=0)
    found = sweep.select(
        [dead], older_than=0, now=NOW, records=state, this_host=HERE,
        project=None,
    ).found[0]  # fmt: skip
    assert "record on this host" in found.evidence


def test_age_comes_from_created_at_not_updated_at() -> None:
    """Glance does not move updated_at while data flows."""
    running = image(created=5, updated_at=stamp(600))
    assert pick([running], {str(running["id"]): sweep.RECORD}) == []


def test_owner_set_or_copied_tags_prove_nothing() -> None:
    # tags on this host without a record: set by an owner, or copied by
    # Cinder (volume glance metadata -> the next image), with any PID
    forged = [image(**{sweep.PID_TAG: pid}) for pid in ("0", "1", "99")]
    assert pick(forged, older_than=0) == []
    # another host's image, named by --host: the mark must name the
    # image itself and the owner must be the caller's project
    copied = image(host="h2", **{sweep.MARK: str(uuid.uuid4())})
    theirs = image(host="h2", owner="p2")
    unmarked = image(host="h2", **{sweep.MARK: None})
    real = image(host="h2")
    images = [copied, theirs, unmarked, real]
    assert pick(images, host="h2") == [real["id"]]
    # and only when --host names the host
    selection = sweep.select(
        images, older_than=0, now=NOW, records={}, this_host=HERE,
        project="p1",
    )  # fmt: skip
    assert selection.found == [] and selection.elsewhere == ["h2"]


@pytest.mark.parametrize(
    "tag", ["\u00b2", "9" * 25, "-1", " 42", "\uff14\uff12", None, 7]
)
def test_hostile_pid_tags_are_shown_empty(tag: object) -> None:
    dead = image(**{sweep.PID_TAG: tag})
    found = sweep.select(
        [dead], older_than=0, now=NOW,
        records={str(dead["id"]): sweep.RECORD}, this_host=HERE,
        project=None,
    ).found  # fmt: skip
    assert found[0].pid == ""
    assert sweep.parse_pid("4194304") == 4194304


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "-1", "infh", "x"])
def test_ages_that_are_not_finite_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        sweep.parse_age(text)
    assert sweep.parse_age("2m") == 120


def test_records_follow_the_lock(tmp_path: Path) -> None:
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    records.hold(str(tmp_path), first)
    records.hold(str(tmp_path), second)
    assert records.scan(str(tmp_path)) == {
        first: sweep.RUNNING,
        second: sweep.RUNNING,
    }
    records.release(first)
    records.drop(second)
    assert records.scan(str(tmp_path)) == {first: sweep.RECORD}
    records.forget(str(tmp_path), first)
    assert records.scan(str(tmp_path)) == {}
    records.hold(str(tmp_path), "../../etc/x")  # never a path
    assert not (tmp_path / "etc").exists()


def test_records_in_a_directory_others_may_write_prove_nothing(
    tmp_path: Path,
) -> None:
    """Anyone may create the directory first in a shared /tmp: a record
    there must not tell the sweep to delete an image, nor a FIFO hang it.
    """
    image_id = str(uuid.uuid4())
    where = records.directory(str(tmp_path))
    where.mkdir(mode=0o700)
    (where / f"{image_id}.json").write_text("{}")
    os.mkfifo(where / f"{uuid.uuid4()}.json")
    assert records.scan(str(tmp_path)) == {image_id: sweep.RECORD}
    where.chmod(0o777)
    assert records.scan(str(tmp_path)) == {}
    other = str(uuid.uuid4())
    records.hold(str(tmp_path), other)  # refused, logged: no record
    records.drop(other)
    assert not (where / f"{other}.json").exists()


def _hold_and_die(where: str, image_id: str) -> None:
    records.hold(where, image_id)
    os._exit(0)


def test_a_killed_uploaders_record_is_free(tmp_path: Path) -> None:
    image_id = str(uuid.uuid4())
    child = multiprocessing.get_context("fork").Process(
        target=_hold_and_die, args=(str(tmp_path), image_id)
    )
    child.start()
    child.join(30)
    assert records.scan(str(tmp_path)) == {image_id: sweep.RECORD}


@pytest.fixture
def glance(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[requests_mock.Mocker]:
    for name in list(os.environ):
        if name.startswith("OS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    # the records live under conversion_dir, the temporary directory
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with requests_mock.Mocker() as mocker:
        yield mocker


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(
        ["--os-auth-type", "none", "--os-endpoint", URL, "sweep", *argv],
        out=out,
        err=err,
    )
    return code, out.getvalue(), err.getvalue()


def listing(glance: requests_mock.Mocker, *images: dict[str, object]) -> None:
    for status in sweep.STUCK_STATES:
        glance.get(
            f"{URL}/v2/images?limit=200&status={status}",
            json={
                "images": [
                    {**i, "created_at": "2000-01-01T00:00:00Z"}
                    for i in images
                    if i["status"] == status
                ]
            },
        )


def test_sweep_deletes_only_a_dead_uploads_image(
    glance: requests_mock.Mocker, tmp_path: Path
) -> None:
    here = socket.gethostname()
    dead, live = image(host=here), image(host=here)
    forged = image(host=here, **{sweep.PID_TAG: "1"})
    hostile = image(host=here, **{sweep.PID_TAG: "9" * 25})
    records.hold(str(tmp_path), str(dead["id"]))
    records.release(str(dead["id"]))
    records.hold(str(tmp_path), str(live["id"]))
    try:
        listing(glance, dead, live, forged, hostile)
        glance.delete(f"{URL}/v2/images/{dead['id']}", status_code=204)
        code, out, err = run("--delete", "--format", "json")
    finally:
        records.drop(str(live["id"]))
    assert (code, err) == (0, "")
    assert [i["image_id"] for i in json.loads(out)] == [dead["id"]]
    deletes = [r.url for r in glance.request_history if r.method == "DELETE"]
    assert deletes == [f"{URL}/v2/images/{dead['id']}"]
    # the deleted image's record went with it
    assert records.scan(str(tmp_path)) == {}


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (404, ""),
        (400, "Image status transition from deleted to deleted is not "
              "allowed"),
    ],
)  # fmt: skip
def test_an_image_another_sweep_deleted_is_success(
    glance: requests_mock.Mocker, tmp_path: Path, status: int, body: str
) -> None:
    dead = image(host=socket.gethostname())
    records.hold(str(tmp_path), str(dead["id"]))
    records.release(str(dead["id"]))
    listing(glance, dead)
    glance.delete(
        f"{URL}/v2/images/{dead['id']}", status_code=status, text=body
    )
    code, out, err = run("--delete")
    assert (code, err) == (0, ""), out
    assert "already gone" in out


@pytest.mark.parametrize(
    "argv",
    [
        ("--older-than", "nan"),
        ("--older-than", "inf"),
        ("--older-than", "-5m"),
        ("--host", "gone-host"),  # another host needs a stated age
        ("--host", socket.gethostname(), "--older-than", "1d"),
    ],
)
def test_sweep_usage_errors(
    glance: requests_mock.Mocker, argv: tuple[str, ...]
) -> None:
    code, _, err = run(*argv)
    assert code == 2 and "Traceback" not in err, err
    assert not glance.request_history
