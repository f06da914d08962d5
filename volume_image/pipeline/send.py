"""The PUT of an upload's data, attempt after attempt.

A failure worth another attempt (refused, cut, 503, or a store the Glance
nodes disagree about) is sent again from byte 0, once Glance has put the
image back to ``queued``; a 401 re-authenticates once; an image of ours
that stays stuck (its Glance node died mid-upload) is replaced by a new
one.  A half-read stream is never resent.
"""

from __future__ import annotations

import logging
import time

from volume_image import config, errors
from volume_image.clients import glance
from volume_image.core import deadline
from volume_image.core.validation import Validator
from volume_image.pipeline import records, retry
from volume_image.pipeline.glance_ops import ImageOps
from volume_image.pipeline.stream import MeteredBody, Source
from volume_image.pipeline.types import ImageMeta, Job, Target

__all__ = ["Sender"]

LOG = logging.getLogger(__name__)

# Glance restores an image to queued within ~0.2 s of a read error
_QUEUED_WAIT = 15.0


def _is_retriable(exc: errors.VolumeImageError) -> bool:
    # connection refused/reset/cut (no status) or 503; never a 500, which
    # Glance also answers for data it could not read; never a timeout:
    # a Glance that stopped reading for upload_read_timeout would only
    # cost that long again
    return (
        isinstance(exc, errors.GlanceUnavailable)
        and not exc.timed_out
        and exc.status_code in (None, 503)
    )


class Sender:
    """Sends an upload's data into its image.

    :param client: the Glance client.
    :param settings: the ``[volume_image]`` settings.
    :param validator: asks Glance's store list again when a store is
        refused.
    :param ops: the image operations.
    """

    def __init__(
        self,
        client: glance.GlanceClient,
        settings: config.Settings,
        validator: Validator,
        ops: ImageOps,
    ) -> None:
        self.client = client
        self.settings = settings
        self.validator = validator
        self.ops = ops

    def send(
        self, job: Job, meta: ImageMeta, src: Source, into: Target
    ) -> tuple[MeteredBody, int]:
        """PUT ``src`` into ``into``, again from byte 0 after a failure
        worth another attempt; ``into`` follows a replaced image.

        :returns: the body of the attempt that worked, and the attempts.
        :raises UnknownStore: Glance refused the store, with the stores
            that are valid now.
        """
        try:
            return self._attempts(job, meta, src, into)
        except errors.UnknownStore as exc:
            self._name_valid_stores(exc, job.store)
            raise

    def _attempts(
        self, job: Job, meta: ImageMeta, src: Source, into: Target
    ) -> tuple[MeteredBody, int]:
        attempt = 0
        retries = 0
        reauthenticated = False
        while True:
            attempt += 1
            with src.open() as f:
                body = MeteredBody(
                    f,
                    src.size,
                    chunk_size=self.settings.chunk_size,
                    hash_algo=self.ops.stream_algo(),
                    progress=job.progress,
                    cancel=job.cancel,
                )
                try:
                    self._put(job, into.image_id, body, src.size)
                    return body, attempt
                except errors.GlanceAuthError as exc:
                    if reauthenticated or not self._may_reauth(exc, body, src):
                        raise
                    reauthenticated = True
                    LOG.warning(
                        "image %s: 401 during upload; authenticating again",
                        into.image_id,
                    )
                    self.client.invalidate()
                except errors.VolumeImageError as exc:
                    delay = self._retry_delay(exc, job, retries, src)
                    retries += 1
                    # no promise yet: the image must be usable first
                    LOG.warning(
                        "image %s: attempt %d failed after %d bytes (%s); "
                        "checking the image in %.1fs",
                        into.image_id,
                        attempt,
                        body.sent,
                        exc,
                        delay,
                    )
                    retry.pause(delay, job.cancel)
            self._ready_for_retry(into, meta, job)
            LOG.warning(
                "image %s: attempt %d of %d, from byte 0",
                into.image_id,
                attempt + 1,
                self.settings.upload_retries + 1,
            )

    def _put(
        self, job: Job, image_id: str, body: MeteredBody, size: int
    ) -> None:
        # the data flow takes what the volume needs; each of its socket
        # operations is bounded by the timeout
        with deadline.paused():
            self.client.upload_image_data(
                image_id,
                body,
                size,
                store_id=job.store,
                timeout=(
                    self.client.connect_timeout,
                    self.settings.upload_read_timeout,
                ),
                base_image_ref=job.base_image_ref,
            )

    @staticmethod
    def _may_reauth(
        exc: errors.GlanceAuthError, body: MeteredBody, src: Source
    ) -> bool:
        """Whether a refused PUT is worth one more with a new token.

        The token expired or was revoked before Glance took the request
        (Glance 33 checks it once, when the request starts; an upload that
        outlives its token completes).
        """
        return exc.status_code == 401 and (not body.sent or src.retriable)

    def _retry_delay(
        self,
        exc: errors.VolumeImageError,
        job: Job,
        retries: int,
        src: Source,
    ) -> float:
        """The wait before the next attempt.

        :raises VolumeImageError: ``exc``, when it is not worth another
            attempt, none is left, or waiting would pass the deadline.
        """
        if (
            not (_is_retriable(exc) or self._nodes_disagree(exc, job.store))
            or retries >= self.settings.upload_retries
            or not src.retriable
        ):
            raise exc
        delay = retry.backoff(self.settings.upload_retry_delay, retries, exc)
        if retry.past(delay):
            exc.hints.append(
                "Not tried again: that would pass the upload's deadline "
                "([volume_image] operation_deadline)."
            )
            raise exc
        return delay

    def _nodes_disagree(
        self, exc: errors.VolumeImageError, store_id: str | None
    ) -> bool:
        """Whether Glance refused the store of an upload that another
        Glance node lists (nodes mid-way through a config change): worth
        another attempt, which may reach a node that has it.
        """
        if not isinstance(exc, errors.UnknownStore) or store_id is None:
            return False
        try:
            listed = (
                self.validator.ask_again(store_id).get(store_id) is not None
            )
        except errors.GlanceError:
            return False
        if listed:
            LOG.warning(
                "Glance refused store %r, but GET /v2/info/stores lists "
                "it: the Glance nodes disagree about their stores",
                store_id,
            )
        return listed

    def _name_valid_stores(
        self, exc: errors.UnknownStore, store_id: str | None
    ) -> None:
        """Glance refused the store: say which stores are valid now, or
        that the Glance nodes disagree when another one lists it.
        """
        try:
            catalog = self.validator.ask_again(store_id)
        except errors.GlanceError:
            return
        if store_id is not None and catalog.get(store_id) is not None:
            exc.hints.append(
                "The Glance nodes disagree: another node lists store "
                f"{store_id!r}. Check that every Glance node has the same "
                "enabled_backends; the volume type may well be right"
            )
            return
        exc.hints.append(
            "Writable stores now: "
            + (", ".join(catalog.writable_ids) or "none")
        )

    def _ready_for_retry(
        self, into: Target, meta: ImageMeta, job: Job
    ) -> None:
        """Have an image that can take data again: the same one once
        Glance has put it back to ``queued``; or, when it stays stuck and
        it is ours (its Glance node died mid-upload), a new one in its
        place.  A caller's stuck image is the caller's to delete.

        :raises ImageStateConflict: a caller's image stays stuck.
        """
        try:
            self._wait_until_queued(into.image_id, job)
            return
        except errors.ImageStateConflict:
            if not into.created:
                raise
        stuck = into.image_id
        into.image_id = self.ops.create(meta)
        into.images += 1
        LOG.warning(
            "image %s stayed stuck after a failed upload (its Glance node "
            "died?); uploading into new image %s instead",
            stuck,
            into.image_id,
        )
        records.release(stuck)
        try:
            self.ops.delete(stuck)
            records.forget(self.ops.settings.conversion_dir, stuck)
        except errors.VolumeImageError as exc:
            LOG.error(
                "stuck image %s could not be deleted (%s): delete it, or "
                "run 'volume-image sweep'",
                stuck,
                exc,
            )

    def _wait_until_queued(self, image_id: str, job: Job) -> None:
        """Wait until Glance has restored the image after a failed send.

        :raises ImageStateConflict: it did not, within :data:`_QUEUED_WAIT`.
        """
        image = retry.poll(
            lambda: self.ops.get(image_id),
            lambda image: image.get("status") != "saving",
            until=time.monotonic() + _QUEUED_WAIT,
            every=0.2,
            idle=lambda seconds: retry.pause(seconds, job.cancel),
        )
        status = image.get("status")
        if status != "queued":
            raise errors.ImageStateConflict(
                f"image {image_id} is {status!r} after a failed upload "
                "and Glance did not put it back to 'queued'; it cannot "
                "be retried",
                image_id=image_id,
            )
