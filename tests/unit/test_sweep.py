"""Selection of the images a killed upload left behind."""

from __future__ import annotations

import datetime

from volume_image.core import sweep

NOW = datetime.datetime(2026, 11, 30, 12, 0, tzinfo=datetime.timezone.utc)


def image(
    image_id: str, status: str, minutes: float, host: str | None = "h1"
) -> dict[str, object]:
    stamp = NOW - datetime.timedelta(minutes=minutes)
    record: dict[str, object] = {
        "id": image_id,
        "name": image_id,
        "status": status,
        "updated_at": stamp.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if host:
        record |= {"volume_image_host": host, "volume_image_pid": "42"}
    return record


def test_only_ours_stuck_and_old_enough() -> None:
    images = [
        image("old-saving", "saving", 120),
        image("old-queued", "queued", 90),
        image("old-killed", "killed", 61),
        image("young", "saving", 5),
        image("active", "active", 500),
        image("not-ours", "saving", 500, host=None),
        image("other-host", "saving", 500, host="h2"),
        {**image("no-time", "saving", 500), "updated_at": "garbage"},
    ]
    found = sweep.select(images, older_than=3600, now=NOW)
    assert [f.image_id for f in found] == [
        "other-host",
        "old-saving",
        "old-queued",
        "old-killed",
    ]
    assert found[1].age_seconds == 7200 and found[1].pid == "42"
    mine = sweep.select(images, older_than=3600, now=NOW, host="h1")
    assert "other-host" not in [f.image_id for f in mine]
    assert sweep.select(images, older_than=10**9, now=NOW) == []
