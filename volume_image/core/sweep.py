"""Find the images a killed upload left behind: pure selection.

Glance never cleans an image whose upload died with its worker: it stays
``saving`` (or ``queued``, or ``killed``) for good.  Every image
:class:`~volume_image.pipeline.uploader.Uploader` creates carries the
properties of
:data:`volume_image.pipeline.uploader.TAGS`, so ours can be told from anyone
else's; ``volume-image sweep`` lists them and deletes them on request.
Images that Cinder's API created (an upload-to-image) carry no tag and
are never selected: Cinder's volume manager owns those.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["STUCK_STATES", "Leftover", "select"]

#: states in which an image of ours holds no usable data
STUCK_STATES = ("queued", "saving", "killed")


@dataclasses.dataclass(frozen=True)
class Leftover:
    """One image of ours that an upload left behind."""

    image_id: str
    name: str
    status: str
    host: str
    pid: str
    age_seconds: float

    def as_dict(self) -> dict[str, Any]:
        """The leftover as a JSON-ready dict."""
        return dataclasses.asdict(self)


def _parse_time(text: str) -> datetime.datetime | None:
    try:
        stamp = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (AttributeError, ValueError):
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=datetime.timezone.utc)
    return stamp


def select(
    images: Iterable[Mapping[str, Any]],
    *,
    older_than: float,
    now: datetime.datetime,
    host: str | None = None,
) -> list[Leftover]:
    """The images of ours, stuck, untouched for ``older_than`` seconds.

    :param images: Glance image records.
    :param older_than: seconds since the image was last updated.
    :param now: the current time (timezone-aware).
    :param host: only those made on this host.
    """
    found = []
    for image in images:
        made_on = image.get("volume_image_host")
        if not made_on or image.get("status") not in STUCK_STATES:
            continue
        if host is not None and made_on != host:
            continue
        stamp = _parse_time(
            str(image.get("updated_at") or image.get("created_at") or "")
        )
        if stamp is None:
            continue
        age = (now - stamp).total_seconds()
        if age < older_than:
            continue
        found.append(
            Leftover(
                image_id=str(image.get("id")),
                name=str(image.get("name") or ""),
                status=str(image.get("status")),
                host=str(made_on),
                pid=str(image.get("volume_image_pid") or ""),
                age_seconds=round(age, 1),
            )
        )
    return sorted(found, key=lambda item: -item.age_seconds)
