"""The process's one cap on concurrent uploads (``[volume_image]
max_concurrent_uploads``), shared by every
:class:`~volume_image.pipeline.uploader.Uploader`: two backends of one
cinder-volume are one machine's disks and network.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from volume_image.core import deadline

__all__ = ["SLOTS", "Slots"]


class Slots:
    """Upload slots; the latest limit set wins (in one service they come
    from one config).
    """

    def __init__(self, limit: int = 4) -> None:
        self._cond = threading.Condition()
        self.limit = limit
        self.in_use = 0

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Hold one slot; waiting for it is not waiting on Glance, so it
        does not count against the deadline.
        """
        with deadline.paused(), self._cond:
            self._cond.wait_for(lambda: self.in_use < self.limit)
            self.in_use += 1
        try:
            yield
        finally:
            with self._cond:
                self.in_use -= 1
                self._cond.notify_all()


#: the process's slots
SLOTS = Slots()
