"""The image operations the upload's steps share, under send, verify and
co-locate: read, create and delete an image riding out a brief Glance
outage, delete what a failed upload made (and only that), and the digest
each Glance was seen to use.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from typing import Any

from volume_image import config, errors
from volume_image.clients import glance
from volume_image.core import deadline, sweep
from volume_image.pipeline import records, retry
from volume_image.pipeline.types import ImageMeta

__all__ = ["TAGS", "ImageOps"]

LOG = logging.getLogger(__name__)

#: image properties an upload sets: shown by ``volume-image sweep``, which
#: trusts none of them alone (see :mod:`volume_image.core.sweep`)
TAGS = (sweep.HOST_TAG, sweep.PID_TAG, sweep.MARK)
# a caller's image is deleted after a failure only while it holds no data
_CLEANUP_STATES = ("queued", "saving")

#: Glance endpoint -> the digest its images carry, learnt from an upload
#: whose algorithm differed, so the next upload hashes the right one once
_GLANCE_ALGO: dict[str, str] = {}


def _tags(image_id: str) -> dict[str, str]:
    return {
        sweep.HOST_TAG: socket.gethostname(),
        sweep.PID_TAG: str(os.getpid()),
        sweep.MARK: image_id,
    }


class ImageOps:
    """One Glance's images, as an upload uses them.

    :param client: the upload's Glance client.
    :param settings: the ``[volume_image]`` settings.
    """

    def __init__(
        self, client: glance.GlanceClient, settings: config.Settings
    ) -> None:
        self.client = client
        self.settings = settings

    def get(self, image_id: str) -> dict[str, Any]:
        """GET the image, riding out a brief Glance outage."""
        return retry.ride_out(self.client.get_image, image_id)

    def create(self, meta: ImageMeta) -> str:
        """Create a ``queued`` image, tagged (see :data:`TAGS`) and
        recorded as ours on this host until it settles.
        """
        image_id = str(uuid.uuid4())
        body = {**meta.body(), **_tags(image_id), "id": image_id}
        made = str(self.client.create_image(body)["id"])
        records.hold(self.settings.conversion_dir, made)
        return made

    def delete(self, image_id: str) -> None:
        """DELETE the image, riding out a brief Glance outage."""
        retry.ride_out(self.client.delete_image, image_id)

    def cleanup(
        self, image_id: str, created: bool, exc: BaseException
    ) -> None:
        """Delete what this upload made, never anything else, and say on
        ``exc`` whether it is gone.

        :param created: the upload created the image; else it is the
            caller's, deleted only while it holds no data or when it is
            known to be bad (:class:`~volume_image.errors.IntegrityError`).
        """
        # its own budget: cleanup must be tried also when the operation's
        # deadline is what failed it
        with deadline.within(self.settings.operation_deadline, fresh=True):
            self._delete_made(image_id, created, exc)

    def _delete_made(
        self, image_id: str, created: bool, exc: BaseException
    ) -> None:
        try:
            if not created and not isinstance(exc, errors.IntegrityError):
                status = self.get(image_id).get("status")
                if status not in _CLEANUP_STATES:
                    return
            self.delete(image_id)
            records.drop(image_id)
            LOG.info("image %s deleted after a failed upload", image_id)
            # said only now: the delete may fail (see below)
            if isinstance(exc, errors.UploadCancelled):
                exc.hints.append(f"Image {image_id} was deleted.")
            elif isinstance(
                exc, (errors.IntegrityError, errors.ColocationError)
            ):
                exc.hints.append("It has been deleted.")
        except errors.VolumeImageError as cleanup_exc:
            hint = (
                f"image {image_id} could not be deleted ({cleanup_exc}); it "
                "may be left in 'saving' state: delete it when Glance is back"
            )
            LOG.error(hint)
            if isinstance(exc, errors.VolumeImageError):
                exc.hints.append(hint)

    def stream_algo(self) -> str | None:
        """The one digest to compute while streaming: none without
        verification; else the one this Glance was seen to use, or
        ``[volume_image] hash_algo``.
        """
        if not self.settings.verify_upload:
            return None
        learnt = _GLANCE_ALGO.get(self.client.endpoint or "")
        return learnt or self.settings.hash_algo

    def learn_algo(self, algo: str) -> None:
        """Remember that this Glance hashes with ``algo``."""
        _GLANCE_ALGO[self.client.endpoint or ""] = algo
