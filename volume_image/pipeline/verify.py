"""After the send: does Glance hold what we sent?  Its status, size, one
digest and store are compared with the body that was streamed.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

from volume_image import config, errors
from volume_image.core import deadline, stores
from volume_image.pipeline import offload
from volume_image.pipeline.glance_ops import ImageOps
from volume_image.pipeline.stream import MeteredBody, Source, digest_of

__all__ = ["Verdict", "Verifier"]

LOG = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Verdict:
    """What is known of an image after the send."""

    #: the store the image landed in, or None (no multi-store)
    store: str | None
    #: Glance's image record; empty when it was not read
    record: Mapping[str, Any]
    verified: bool
    #: why the image was kept unverified, or None
    unverified_reason: str | None = None

    def field(self, name: str) -> str:
        """A field of Glance's record, or empty."""
        return str(self.record.get(name) or "")


class Verifier:
    """Compares what Glance reports with what was sent.

    :param ops: the image operations (and the learnt digests).
    :param settings: the ``[volume_image]`` settings.
    """

    def __init__(self, ops: ImageOps, settings: config.Settings) -> None:
        self.ops = ops
        self.settings = settings

    def verify(
        self,
        image_id: str,
        body: MeteredBody,
        target: stores.StoreInfo | None,
        src: Source,
    ) -> Verdict:
        """Check the image unless ``[volume_image] verify_upload`` is off.

        An image Glance cannot be asked about is kept, unverified: the
        data is in and Glance took it, and an image is deleted only when
        it is known to be bad.

        :raises IntegrityError: any mismatch, or nothing to compare.
        """
        expected = target.id if target else None
        if not self.settings.verify_upload:
            return Verdict(expected, {}, verified=False)
        try:
            return self._check(image_id, body, target, src)
        except errors.GlanceUnavailable as exc:
            why = (
                f"Glance could not be asked to verify image {image_id} "
                f"({exc}); it was kept unverified"
            )
            LOG.warning("%s", why)
            return Verdict(expected, {}, verified=False, unverified_reason=why)

    def _check(
        self,
        image_id: str,
        body: MeteredBody,
        target: stores.StoreInfo | None,
        src: Source,
    ) -> Verdict:
        """Compare status, size, one digest and the store.

        One digest is compared: Glance's ``os_hash_value`` when Glance
        hashes with the algorithm we streamed, else (an older Glance, or
        another ``hashing_algorithm``) we read the source once more for
        Glance's algorithm, or for the md5 ``checksum`` when that is all
        Glance reports, and remember the algorithm for the next upload.
        Nothing is left unverified silently.
        """
        image = self.ops.get(image_id)
        problems = []
        if image.get("status") != "active":
            problems.append(f"status is {image.get('status')!r}, not 'active'")
        if image.get("size") != body.sent:
            problems.append(
                f"size is {image.get('size')}, we sent {body.sent}"
            )
        problem = self._compare_digest(image_id, image, body, src)
        if problem:
            problems.append(problem)
        landed = [s for s in (image.get("stores") or "").split(",") if s]
        if target is not None and target.id not in landed:
            problems.append(
                f"it is in store(s) {','.join(landed) or '(none)'}, not "
                f"{target.id!r}"
            )
        if problems:
            raise errors.IntegrityError(
                f"image {image_id} does not match what was sent: "
                + "; ".join(problems)
                + ".",
                image_id=image_id,
            )
        where = target.id if target else (landed[0] if landed else None)
        return Verdict(where, image, verified=True)

    def _compare_digest(
        self,
        image_id: str,
        image: dict[str, Any],
        body: MeteredBody,
        src: Source,
    ) -> str | None:
        """The digest mismatch, or None when the digests agree."""
        glance_algo = image.get("os_hash_algo")
        if glance_algo and image.get("os_hash_value"):
            algo, field, theirs = (
                str(glance_algo),
                "os_hash_value",
                image["os_hash_value"],
            )
        elif image.get("checksum"):
            algo, field, theirs = "md5", "checksum", image["checksum"]
        else:
            return "Glance reports neither os_hash_value nor checksum"
        streamed = body.hash
        if streamed is not None and streamed.name == algo:
            ours = streamed.hexdigest()
        else:
            # rare: learnt once per Glance, then streamed right
            LOG.warning(
                "image %s: Glance reports %s, we streamed %s; reading the "
                "source again to compare %s",
                image_id,
                algo,
                streamed.name if streamed else "no digest",
                field,
            )
            self.ops.learn_algo(algo)
            if not src.retriable:
                return (
                    f"Glance reports {algo}, and the source cannot be read "
                    "again to compute it"
                )
            try:
                with deadline.paused():
                    ours = offload.run(
                        digest_of, src, algo, self.settings.chunk_size
                    )
            except ValueError:
                return f"{algo} ({field}) is not a digest we can compute"
        if ours != theirs:
            return f"{field} ({algo}) is {theirs}, we sent {ours}"
        return None
