"""The same-cluster fast path's decision (pure).

An RBD volume uploaded to an rbd store on its own Ceph cluster needs no
byte to leave Ceph: the image can be a flattened clone of a snapshot of
the volume, registered with Glance by its location (as Nova's
``direct_snapshot`` does for instance snapshots).  Whether that applies
is decided here, from values only; :mod:`volume_image.cinder.rbd_direct`
does it.  Every refusal carries the reason the log gives, so an operator
can tell why an upload streamed.
"""

from __future__ import annotations

import dataclasses
import urllib.parse

from volume_image.core.stores import RESERVED_PREFIX, StoreInfo

__all__ = ["Decision", "decide", "location_url"]


@dataclasses.dataclass(frozen=True)
class Decision:
    """Whether to take the fast path, and why (not)."""

    direct: bool
    reason: str
    store: str = ""
    pool: str = ""
    fsid: str = ""


def decide(
    *,
    enabled: bool,
    disk_format: str,
    container_format: str,
    store: StoreInfo | None,
    detailed: bool,
    volume_fsid: str,
    service_token: bool,
    colocating: bool = False,
) -> Decision:
    """Decide the fast path for one upload.

    :param enabled: ``[volume_image] rbd_direct_upload``.
    :param store: the target store from the catalog (the volume type's,
        or Glance's default), None when unknown.
    :param detailed: whether the catalog came from ``/stores/detail``
        (only that one names an rbd store's fsid and pool).
    :param volume_fsid: the fsid of the volume's Ceph cluster.
    :param service_token: whether Cinder sends a service token (Glance
        adds an ``rbd://`` location only for the service role).
    :param colocating: co-location with the base image will place the
        image (no store named, ``colocate_with_base_image`` on, a base
        image known): the pipeline chooses the stores, so it streams.
    """

    def no(reason: str) -> Decision:
        return Decision(False, reason, store.id if store else "")

    if not enabled:
        return no("[volume_image] rbd_direct_upload is off")
    if disk_format != "raw":
        return no(f"disk_format {disk_format} needs a conversion")
    if container_format == "compressed":
        return no("container_format compressed needs a conversion")
    if not service_token:
        return no(
            "no service token ([service_user] send_service_user_token); "
            "Glance adds an rbd location only for the service role"
        )
    if colocating:
        return no(
            "co-location with the base image chooses the stores "
            "([volume_image] colocate_with_base_image)"
        )
    if store is None:
        return no("the store is not in Glance's list, or there is no default")
    if store.read_only or store.id.startswith(RESERVED_PREFIX):
        return no(f"store {store.id} does not take uploads")
    if not detailed:
        return no(
            "Glance did not describe its stores (GET /v2/info/stores/detail "
            "needs the admin or service role)"
        )
    if store.type != "rbd":
        return no(f"store {store.id} is a {store.type or 'non-rbd'} store")
    if not store.fsid or not store.pool:
        return no(f"Glance does not give store {store.id}'s fsid and pool")
    if store.fsid != volume_fsid:
        return no(
            f"store {store.id} is on Ceph cluster {store.fsid}, the volume "
            f"on {volume_fsid}"
        )
    return Decision(
        True,
        f"store {store.id} is on the volume's Ceph cluster {volume_fsid}",
        store.id,
        store.pool,
        store.fsid,
    )


def location_url(fsid: str, pool: str, image: str, snap: str = "snap") -> str:
    """The location glance_store gives an rbd image: Glance matches it to
    a store by the quoted ``rbd://fsid/pool/`` prefix.
    """
    q = urllib.parse.quote
    return f"rbd://{q(fsid, '')}/{q(pool, '')}/{q(image, '')}/{q(snap, '')}"
