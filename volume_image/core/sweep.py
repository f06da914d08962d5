"""Find the images a killed upload left behind: pure selection.

Glance never cleans an image whose upload died with its worker: it stays
``saving`` (or ``queued``, or ``killed``) for good.  ``volume-image
sweep`` lists them and deletes them on request, and must never take a
live upload or anyone else's image.

Image properties prove nothing: the image's owner can set any of them,
and Cinder copies an image's properties into the glance metadata of a
volume made from it, then into every image uploaded from that volume.
So an image is called ours only on evidence nobody else can forge or
copy:

``record``
    this host holds the upload record that the uploader wrote when it
    created the image (:mod:`volume_image.pipeline.records`), and its
    lock is free: the process that held it for the whole upload is gone.
    A held lock is a live upload, whatever its age: never selected.
``named host``
    for an image made on another host, whose records this host cannot
    read: the operator names that host (``--host``), the image's owner is
    the caller's project, its :data:`MARK` property names the image's own
    id (a copied property names the image it was copied from), and it was
    *created* longer ago than the age the operator gives, which must
    exceed the longest upload (``updated_at`` does not move while Glance
    receives data, so it tells nothing about liveness).

Images Cinder's API created (an upload-to-image) carry no record and are
never selected: Cinder's volume manager owns those.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "HOST_TAG",
    "MARK",
    "PID_TAG",
    "RECORD",
    "RUNNING",
    "STUCK_STATES",
    "Leftover",
    "Selection",
    "parse_age",
    "parse_pid",
    "select",
]

#: states in which an image of ours holds no usable data
STUCK_STATES = ("queued", "saving", "killed")
#: the image properties an upload sets: shown, never trusted alone
HOST_TAG = "volume_image_host"
PID_TAG = "volume_image_pid"
#: names the image's own id; a copy on another image names the wrong one
MARK = "volume_image_upload"
#: states of a local upload record (:func:`select`'s ``records``)
RUNNING = "running"
RECORD = "gone"
#: PIDs are at most 2**22 on Linux: seven digits
_PID_DIGITS = 7
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclasses.dataclass(frozen=True)
class Leftover:
    """One image of ours that an upload left behind.

    :ivar evidence: how it is known to be ours and stuck.
    """

    image_id: str
    name: str
    status: str
    host: str
    pid: str
    age_seconds: float
    evidence: str = ""

    def as_dict(self) -> dict[str, Any]:
        """The leftover as a JSON-ready dict."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Selection:
    """What :func:`select` found.

    :ivar found: the leftovers, oldest first.
    :ivar elsewhere: other hosts that made stuck images which look like
        ours; they are selected only when ``host`` names them.
    """

    found: list[Leftover]
    elsewhere: list[str]


def parse_pid(text: object) -> int | None:
    """A PID's text as a number, or None unless it is 1 to 7 ASCII digits
    naming a process (not 0).
    """
    if not isinstance(text, str) or not 0 < len(text) <= _PID_DIGITS:
        return None
    if not all("0" <= char <= "9" for char in text):
        return None
    return int(text) or None


def parse_age(text: str) -> float:
    """Seconds from ``3600``, ``90s``, ``30m``, ``2h`` or ``1d``.

    :raises ValueError: not a finite, non-negative age.
    """
    unit = _UNITS.get(text[-1:].lower(), 0)
    number = text[:-1] if unit else text
    value = float(number) * (unit or 1)  # ValueError for garbage
    if not math.isfinite(value) or value < 0:
        raise ValueError(text)
    return value


def _parse_time(text: str) -> datetime.datetime | None:
    try:
        stamp = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (AttributeError, ValueError):
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=datetime.timezone.utc)
    return stamp


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def select(
    images: Iterable[Mapping[str, Any]],
    *,
    older_than: float,
    now: datetime.datetime,
    records: Mapping[str, str],
    this_host: str,
    project: str | None,
    host: str | None = None,
) -> Selection:
    """The images of ours that a dead upload left, created at least
    ``older_than`` seconds ago (see the module docstring for the proof).

    :param images: Glance image records.
    :param older_than: seconds since the image was created.
    :param now: the current time (timezone-aware).
    :param records: this host's upload records, image id ->
        :data:`RUNNING` (its lock is held) or :data:`RECORD` (the upload
        process is gone).
    :param this_host: this host's name.
    :param project: the caller's project (the image owner required for
        another host's images); None without authentication.
    :param host: another host whose images may be selected.
    """
    found = []
    elsewhere = set()
    for image in images:
        image_id = _text(image.get("id"))
        if not image_id or image.get("status") not in STUCK_STATES:
            continue
        stamp = _parse_time(_text(image.get("created_at")))
        if stamp is None:
            continue
        age = (now - stamp).total_seconds()
        made_on = _text(image.get(HOST_TAG))
        state = records.get(image_id)
        if state == RUNNING:
            continue
        if state == RECORD:
            evidence = "record on this host; its upload process is gone"
        elif (
            made_on
            and made_on != this_host
            and image.get(MARK) == image_id
            and image.get("owner") == project
        ):
            if made_on != host:
                elsewhere.add(made_on)
                continue
            evidence = (
                f"made on {made_on} (named by --host) by this project, "
                "created before --older-than"
            )
        else:
            continue
        if age < older_than:
            continue
        pid = parse_pid(image.get(PID_TAG))
        found.append(
            Leftover(
                image_id=image_id,
                name=_text(image.get("name")),
                status=str(image.get("status")),
                host=made_on,
                pid="" if pid is None else str(pid),
                age_seconds=round(age, 1),
                evidence=evidence,
            )
        )
    found.sort(key=lambda item: -item.age_seconds)
    return Selection(found=found, elsewhere=sorted(elsewhere))
