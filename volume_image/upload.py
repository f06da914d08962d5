"""The upload pipeline: a volume becomes a Glance image in the right store.

::

    resolve the store (spec, cached catalog) -> convert/compress if asked
    -> create the image (unless given) -> PUT the metered stream
    -> verify what Glance reports -> UploadResult
    on failure: retry what is provably retriable from byte 0, else clean up

Nothing is created for a store already known to be invalid.  A retry never
resends a half-read stream: it waits until Glance has put the image back
to ``queued`` and reopens the source at byte 0.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import shutil
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any, TypeVar

from volume_image import (
    config,
    convert,
    errors,
    glance,
    offload,
    specs,
    stores,
)
from volume_image.validation import StoreCatalogCache, Validator

__all__ = [
    "TAGS",
    "ImageMeta",
    "Source",
    "UploadResult",
    "Uploader",
]

LOG = logging.getLogger(__name__)
T = TypeVar("T")

#: ``progress(bytes_done, bytes_total)``, called after every chunk
ProgressCallback = Callable[[int, int], None]

_RETRY_DELAY_CAP = 30.0
# Glance restores an image to queued within ~0.2 s of a read error
_QUEUED_WAIT = 15.0
_CLEANUP_STATES = ("queued", "saving")
# how many answers of Glance are asked before a store is called gone
_STORE_ASKS = 3
# waits between tries of an idempotent call (GET or DELETE of the image)
# while Glance cannot be reached or answers 5xx; None: give up.  About 8 s
# in all: a Glance node restarting, or a worker's "database is locked"
_IDEMPOTENT_DELAYS = (0.2, 0.5, 1.0, 2.0, 4.0, None)


@dataclasses.dataclass(frozen=True)
class ImageMeta:
    """What the new image is called and how its data is packaged.

    :ivar properties: further image fields and properties, sent as given
        to ``POST /v2/images``.
    """

    name: str
    disk_format: str = "raw"
    container_format: str = "bare"
    properties: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        """The ``POST /v2/images`` body."""
        return {
            **self.properties,
            "name": self.name,
            "disk_format": self.disk_format,
            "container_format": self.container_format,
        }


@dataclasses.dataclass(frozen=True)
class UploadResult:
    """What an upload produced, as Glance confirmed it."""

    image_id: str
    store: str | None
    size: int
    checksum: str
    os_hash_algo: str
    os_hash_value: str
    seconds: float
    attempts: int
    verified: bool
    #: images created for this upload: more than 1 when Glance left one
    #: stuck (its node died) and we replaced it with a new one
    images: int = 1
    #: why the image was kept without verification (Glance could not be
    #: asked afterwards), or None
    unverified_reason: str | None = None

    @property
    def throughput(self) -> float:
        """Bytes per second over the whole call."""
        return self.size / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        """The result as a JSON-ready dict."""
        return dataclasses.asdict(self)


@dataclasses.dataclass
class _Target:
    """The image an upload is filling; it changes when a stuck image of
    ours is replaced.
    """

    image_id: str
    created: bool
    images: int = 1


class Source:
    """A volume to read: a path (file or block device), or an open binary
    file with a known size.

    Each :meth:`open` starts at byte 0, which is what makes a retry safe.
    A file object that cannot seek can be sent once, never retried.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        fileobj: IO[bytes] | None = None,
        size: int | None = None,
    ) -> None:
        if (path is None) == (fileobj is None):
            raise ValueError("give exactly one of path and fileobj")
        self.path = None if path is None else Path(path)
        self._fileobj = fileobj
        if fileobj is not None:
            if size is None:
                raise ValueError("a file object needs its size")
            self.size = size
            self._opened = False
        else:
            self.size = self._path_size() if size is None else size

    def _path_size(self) -> int:
        assert self.path is not None
        try:
            st = self.path.stat()
            if stat.S_ISBLK(st.st_mode):
                # a block device's st_size is 0: ask the device
                with open(self.path, "rb") as dev:
                    return dev.seek(0, os.SEEK_END)
            if not stat.S_ISREG(st.st_mode):
                raise errors.SourceError(
                    f"{self.path} is neither a file nor a block device"
                )
            return st.st_size
        except OSError as exc:
            raise errors.SourceError(
                f"cannot read volume {self.path}: {exc.strerror}"
            ) from exc

    @property
    def retriable(self) -> bool:
        """Whether the source can be read again from byte 0."""
        if self._fileobj is None:
            return True
        try:
            return self._fileobj.seekable()
        except (OSError, ValueError):
            return False

    @contextlib.contextmanager
    def open(self) -> Iterator[IO[bytes]]:
        """Yield the source positioned at byte 0."""
        if self._fileobj is not None:
            if self._opened:
                if not self.retriable:
                    raise errors.SourceError(
                        "the source cannot seek, so it cannot be sent again"
                    )
                self._fileobj.seek(0)
            self._opened = True
            yield self._fileobj
            return
        assert self.path is not None
        try:
            f = open(self.path, "rb")
        except OSError as exc:
            raise errors.SourceError(
                f"cannot open volume {self.path}: {exc.strerror}"
            ) from exc
        with f:
            yield f


class MeteredBody:
    """A single-use upload body: reads the source in chunks, counts and
    hashes every byte, reports progress, honours cancellation, and fails
    if the source ends early.

    ``len()`` is the declared size, so requests sends ``Content-Length``.
    It computes one digest (``hash_algo``), or none.

    Reading and hashing run in a native thread (:mod:`volume_image.offload`)
    one chunk ahead of the send: the next chunk is read and hashed while
    the current one goes out, into two buffers used in turn, so memory
    stays at two chunks and an event loop (cinder-volume's) is never held
    by file reads or hashing.
    """

    def __init__(
        self,
        fileobj: IO[bytes],
        size: int,
        *,
        chunk_size: int,
        hash_algo: str | None,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
        chunk_filter: Callable[[bytes], bytes] | None = None,
    ) -> None:
        self._f = fileobj
        self.size = size
        self._chunk = chunk_size
        #: the one digest computed while streaming, or None (no hashing)
        self.hash = None if hash_algo is None else _new_hash(hash_algo)
        self.sent = 0
        self._progress = progress
        self._cancel = cancel
        self._filter = chunk_filter
        self._used = False
        self._readinto = True

    def __len__(self) -> int:
        return self.size

    def __repr__(self) -> str:
        # keystoneauth's debug log prints the body: never the bytes
        return f"<MeteredBody {self.size} bytes>"

    def _fill(self, buf: bytearray, want: int) -> int:
        """Read up to ``want`` bytes into ``buf`` and hash them; runs in
        the worker thread, so it neither logs nor calls back.
        """
        view = memoryview(buf)[:want]
        got = 0
        while got < want:
            n = self._read_into(view[got:])
            if not n:
                break
            got += n
        if self.hash is not None:
            self.hash.update(view[:got])
        return got

    def _read_into(self, view: memoryview) -> int:
        if self._readinto:
            try:
                return self._f.readinto(view)  # type: ignore[attr-defined,no-any-return]
            except (AttributeError, NotImplementedError):
                # a file-like object with read() only
                self._readinto = False
        data = self._f.read(len(view))
        view[: len(data)] = data
        return len(data)

    def _collect(self, pending: offload.Pending[int]) -> int:
        try:
            return pending.result()
        except OSError as exc:
            raise errors.SourceError(
                f"reading the volume failed at byte {self.sent}: {exc}"
            ) from exc

    def __iter__(self) -> Iterator[bytes | memoryview]:
        if self._used:
            raise RuntimeError("an upload body can be sent only once")
        self._used = True
        if self.size == 0:
            return
        bufs = (bytearray(self._chunk), bytearray(self._chunk))
        turn = 0
        with offload.Worker() as worker:
            pending = worker.start(
                self._fill, bufs[turn], min(self._chunk, self.size)
            )
            while True:
                got = self._collect(pending)
                if not got:
                    raise errors.SourceError(
                        f"the volume ended at byte {self.sent} of {self.size}"
                    )
                chunk = memoryview(bufs[turn])[:got]
                self.sent += got
                if self._cancel is not None and self._cancel.is_set():
                    raise errors.UploadCancelled("upload cancelled")
                ahead = min(self._chunk, self.size - self.sent)
                if ahead:
                    # the other buffer was sent before this chunk was asked
                    # for, so it is free to fill
                    turn ^= 1
                    pending = worker.start(self._fill, bufs[turn], ahead)
                if self._progress is not None:
                    self._progress(self.sent, self.size)
                # the test seam: what is sent may differ from what is hashed
                yield self._filter(bytes(chunk)) if self._filter else chunk
                if not ahead:
                    return


def _new_hash(algo: str) -> Any:
    if algo == "md5":
        return hashlib.md5(usedforsecurity=False)
    return hashlib.new(algo)


def _digest(src: Source, algo: str, chunk_size: int) -> str:
    """Read the whole source again and return its ``algo`` hex digest
    (runs in a native thread: see :func:`offload.run`).
    """
    digest = _new_hash(algo)
    with src.open() as f:
        left = src.size
        while left and (data := f.read(min(chunk_size, left))):
            digest.update(data)
            left -= len(data)
    return str(digest.hexdigest())


#: image properties that mark an image as made by volume_image, so that
#: ``volume-image sweep`` can find the ones a dead process left behind
TAGS = ("volume_image_host", "volume_image_pid")


def _tags() -> dict[str, str]:
    return {
        "volume_image_host": socket.gethostname(),
        "volume_image_pid": str(os.getpid()),
    }


#: Glance endpoint -> the digest its images carry, learnt from an upload
#: whose algorithm differed, so the next upload hashes the right one once
_GLANCE_ALGO: dict[str, str] = {}

_SLOTS_LOCK = threading.Lock()
_SLOTS: dict[int, threading.BoundedSemaphore] = {}


def _slots(limit: int) -> threading.BoundedSemaphore:
    """The process-wide semaphore for a concurrency cap."""
    with _SLOTS_LOCK:
        if limit not in _SLOTS:
            _SLOTS[limit] = threading.BoundedSemaphore(limit)
        return _SLOTS[limit]


def _is_retriable(exc: errors.VolumeImageError) -> bool:
    # connection refused/reset/cut (no status) or 503; never a 500, which
    # Glance also answers for data it could not read
    return isinstance(exc, errors.GlanceUnavailable) and exc.status_code in (
        None,
        503,
    )


def _idempotent(call: Callable[..., T], *args: str) -> T:
    """``call(*args)`` for a GET or DELETE, tried again after
    :data:`_IDEMPOTENT_DELAYS` while Glance refuses connections or answers
    5xx (repeating either changes nothing), then the last error.  A
    timeout is not tried again: a Glance that hangs would cost the whole
    timeout once more each time.
    """
    for delay in _IDEMPOTENT_DELAYS:
        try:
            return call(*args)
        except errors.GlanceUnavailable as exc:
            if delay is None or exc.timed_out:
                raise
            LOG.debug("Glance unavailable (%s); again in %.1fs", exc, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def _pause(seconds: float, cancel: threading.Event | None) -> None:
    """Sleep, but wake up and raise when the upload is cancelled."""
    if cancel is None:
        time.sleep(seconds)
    elif cancel.wait(seconds):
        raise errors.UploadCancelled("upload cancelled")


class Uploader:
    """Uploads volumes to Glance; thread-safe, one per process is enough.

    :param client: the Glance client.
    :param settings: the ``[volume_image]`` settings.
    :param cache: a catalog cache to share with validators; one is made
        from ``client`` when not given.
    """

    def __init__(
        self,
        client: glance.GlanceClient,
        settings: config.Settings | None = None,
        *,
        cache: StoreCatalogCache | None = None,
    ) -> None:
        self.client = client
        self.settings = settings or config.Settings()
        self.cache = cache or StoreCatalogCache(
            lambda: _idempotent(client.get_store_catalog),
            ttl=self.settings.store_cache_ttl,
        )
        self.validator = Validator(self.cache)
        self._slots = _slots(self.settings.max_concurrent_uploads)
        # what a killed process left behind would otherwise stay for good
        convert.sweep_stale_workdirs(self.settings.conversion_dir)
        #: test seam: applied to each chunk after hashing, before sending
        self.chunk_filter: Callable[[bytes], bytes] | None = None

    def resolve_store(
        self,
        *,
        extra_specs: Mapping[str, Any] | None = None,
        store_id: str | None = None,
    ) -> tuple[str | None, stores.StoreInfo | None]:
        """Decide where an upload goes, from the cached catalog.

        :returns: (the store to name in the request or None for the
            default, the store expected to hold the image or None when
            Glance has no multi-store).
        :raises SpecError: the named store is invalid.
        :raises GlanceError: the catalog could not be had.
        """
        if extra_specs is not None and store_id is not None:
            raise ValueError("give extra_specs or store_id, not both")
        key = specs.STORE_ID_KEY
        if extra_specs is not None:
            split = specs.split_extra_specs(extra_specs)
            if split.has_store_id:
                key = split.original_keys[specs.STORE_ID_KEY]
                store_id = split.store_id
        if store_id is not None:
            return store_id, self._check_store(store_id, key)
        return None, self.cache.get().default

    def _check_store(self, store_id: str, key: str) -> stores.StoreInfo:
        """The validator's check; an unknown store is asked about again
        (a load balancer sends each request to the next Glance node, and
        nodes mid-way through a config change disagree) before the spec
        is called wrong.
        """
        try:
            return self.validator.check_store(store_id, key)
        except errors.UnknownStore as exc:
            fresh = self._ask_for_store(store_id, _STORE_ASKS - 1)
            if fresh.get(store_id) is None:
                raise exc from None
            LOG.warning(
                "store %r: one answer of Glance did not list it, another "
                "does: the Glance nodes disagree",
                store_id,
            )
            return stores.check_store_id(store_id, fresh, key)

    def _ask_for_store(
        self, store_id: str | None, asks: int = _STORE_ASKS
    ) -> stores.StoreCatalog:
        """Fresh store lists, up to ``asks`` of them, until one lists
        ``store_id``: a load balancer sends each request to the next
        Glance node, and nodes mid-way through a config change disagree.

        :returns: the list that names the store, or the last one asked.
        :raises GlanceError: Glance cannot be asked.
        """
        catalog = self.cache.get(refresh=True)
        for _ in range(asks - 1):
            if store_id is None or catalog.get(store_id) is not None:
                break
            catalog = self.cache.get(refresh=True)
        return catalog

    def upload(
        self,
        source: Source | str | os.PathLike[str],
        meta: ImageMeta | None = None,
        *,
        extra_specs: Mapping[str, Any] | None = None,
        store_id: str | None = None,
        image_id: str | None = None,
        source_format: str = "raw",
        base_image_ref: str | None = None,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> UploadResult:
        """Upload a volume and return what Glance confirmed.

        :param source: the volume: a :class:`Source` or a path.
        :param meta: the image's name and formats; may be omitted with
            ``image_id``, whose own formats are then used.
        :param extra_specs: the volume type's extra specs, whose
            ``image_service:store_id`` names the store.
        :param store_id: an explicit store instead of ``extra_specs``.
        :param image_id: an existing ``queued`` image to fill (Cinder's API
            creates it before the volume service uploads).
        :param source_format: the volume's own format, for qemu-img
            (its names: ``vpc`` for VHD).  A source that is not raw is
            inspected before qemu-img reads it.
        :param base_image_ref: the image the volume was created from,
            sent to Glance as ``x-openstack-base-image-ref``.
        :param progress: called with (bytes done, bytes total).
        :param cancel: set from another thread to cancel and clean up.
        :raises SpecError: the store is invalid; nothing was created.
        :raises GlanceError: Glance could not be asked or refused us.
        :raises UploadError: the upload failed and was cleaned up;
            :class:`~volume_image.errors.UnsafeSource` before anything
            was sent.
        """
        t0 = time.monotonic()
        src = source if isinstance(source, Source) else Source(source)
        header_store, target = self.resolve_store(
            extra_specs=extra_specs, store_id=store_id
        )
        with self._slots:
            if image_id is not None:
                image = self._image(image_id)
                if image.get("status") != "queued":
                    raise errors.ImageStateConflict(
                        f"image {image_id} is {image.get('status')!r}, not "
                        "'queued'; it cannot take data",
                        image_id=image_id,
                    )
                if meta is None:
                    meta = ImageMeta(
                        name=image.get("name") or "",
                        disk_format=image.get("disk_format") or "raw",
                        container_format=image.get("container_format")
                        or "bare",
                    )
            if meta is None:
                raise ValueError("meta is needed when no image_id is given")
            workdir = convert.make_workdir(self.settings.conversion_dir)
            try:
                payload = self._prepare(
                    src, meta, source_format, workdir, cancel
                )
                return self._upload(
                    payload,
                    meta,
                    header_store,
                    target,
                    image_id,
                    base_image_ref,
                    progress,
                    cancel,
                    t0,
                )
            finally:
                shutil.rmtree(workdir, ignore_errors=True)

    def _prepare(
        self,
        src: Source,
        meta: ImageMeta,
        source_format: str,
        workdir: Path,
        cancel: threading.Event | None,
    ) -> Source:
        """Convert and compress as the formats ask; return what to send."""
        payload = src
        fmt = meta.disk_format
        if fmt != source_format:
            if fmt not in convert.CONVERTIBLE_FORMATS:
                raise errors.ConversionError(
                    f"cannot convert to disk_format {fmt!r}; supported: "
                    f"{', '.join(convert.CONVERTIBLE_FORMATS)}"
                )
            if src.path is None:
                raise errors.SourceError(
                    "conversion needs a source path, not a file object"
                )
            payload = Source(
                convert.convert(
                    src.path, source_format, fmt, workdir, cancel=cancel
                )
            )
        if meta.container_format == "compressed":
            if payload.path is None:
                raise errors.SourceError(
                    "compression needs a source path, not a file object"
                )
            payload = Source(
                convert.compress(
                    payload.path,
                    payload.size,
                    workdir,
                    chunk_size=self.settings.chunk_size,
                    cancel=cancel,
                )
            )
        return payload

    def _upload(
        self,
        src: Source,
        meta: ImageMeta,
        header_store: str | None,
        target: stores.StoreInfo | None,
        image_id: str | None,
        base_image_ref: str | None,
        progress: ProgressCallback | None,
        cancel: threading.Event | None,
        t0: float,
    ) -> UploadResult:
        if image_id is None:
            into = _Target(self._create(meta), created=True)
        else:
            into = _Target(image_id, created=False)
        LOG.info(
            "uploading %d bytes to image %s, store %s",
            src.size,
            into.image_id,
            header_store or "(default)",
        )
        unverified = None
        try:
            body, attempts = self._send(
                src, into, meta, header_store, base_image_ref, progress, cancel
            )
            record: dict[str, Any] = {}
            landed = target.id if target else None
            if self.settings.verify_upload:
                try:
                    landed, record = self._verify(
                        into.image_id, body, target, src
                    )
                except errors.GlanceUnavailable as exc:
                    # the data is in and Glance took it: an image is
                    # deleted only when it is known to be bad
                    unverified = (
                        f"Glance could not be asked to verify image "
                        f"{into.image_id} ({exc}); it was kept unverified"
                    )
                    LOG.warning("%s", unverified)
            if cancel is not None and cancel.is_set():
                # cancelled while verifying: what we made goes too
                raise errors.UploadCancelled("upload cancelled")
        except BaseException as exc:
            if isinstance(exc, errors.UnknownStore):
                self._name_valid_stores(exc, header_store)
            self._cleanup(into.image_id, into.created, exc)
            raise
        seconds = time.monotonic() - t0
        LOG.info(
            "image %s: %d bytes in store %s in %.1fs (%d attempt(s))",
            into.image_id,
            src.size,
            landed,
            seconds,
            attempts,
        )
        return UploadResult(
            image_id=into.image_id,
            store=landed,
            size=src.size,
            checksum=record.get("checksum") or "",
            os_hash_algo=record.get("os_hash_algo") or "",
            os_hash_value=record.get("os_hash_value") or "",
            seconds=seconds,
            attempts=attempts,
            verified=self.settings.verify_upload and unverified is None,
            images=into.images,
            unverified_reason=unverified,
        )

    def _create(self, meta: ImageMeta) -> str:
        """Create a ``queued`` image, tagged as ours (see :data:`TAGS`)."""
        body = {**meta.body(), **_tags()}
        return str(self.client.create_image(body)["id"])

    def _send(
        self,
        src: Source,
        into: _Target,
        meta: ImageMeta,
        header_store: str | None,
        base_image_ref: str | None,
        progress: ProgressCallback | None,
        cancel: threading.Event | None,
    ) -> tuple[MeteredBody, int]:
        settings = self.settings
        timeout = (
            self.client.connect_timeout,
            settings.upload_read_timeout,
        )
        attempt = 0
        retries = 0
        reauthenticated = False
        while True:
            attempt += 1
            with src.open() as f:
                body = MeteredBody(
                    f,
                    src.size,
                    chunk_size=settings.chunk_size,
                    hash_algo=self._stream_algo(),
                    progress=progress,
                    cancel=cancel,
                    chunk_filter=self.chunk_filter,
                )
                image_id = into.image_id
                try:
                    self.client.upload_image_data(
                        image_id,
                        body,
                        src.size,
                        store_id=header_store,
                        timeout=timeout,
                        base_image_ref=base_image_ref,
                    )
                    return body, attempt
                except errors.GlanceAuthError as exc:
                    # the token expired or was revoked before Glance took
                    # the request (Glance 33 checks it once, when the
                    # request starts; an upload that outlives its token
                    # completes): authenticate again and send once more
                    if (
                        exc.status_code != 401
                        or reauthenticated
                        or (body.sent and not src.retriable)
                    ):
                        raise
                    reauthenticated = True
                    LOG.warning(
                        "image %s: 401 during upload; authenticating again",
                        image_id,
                    )
                    self.client.invalidate()
                except errors.VolumeImageError as exc:
                    if (
                        not (
                            _is_retriable(exc)
                            or self._nodes_disagree(exc, header_store)
                        )
                        or retries >= settings.upload_retries
                        or not src.retriable
                    ):
                        raise
                    delay = min(
                        settings.upload_retry_delay * 2**retries,
                        _RETRY_DELAY_CAP,
                    )
                    retries += 1
                    # no promise yet: the image must be usable first
                    LOG.warning(
                        "image %s: attempt %d failed after %d bytes (%s); "
                        "checking the image in %.1fs",
                        image_id,
                        attempt,
                        body.sent,
                        exc,
                        delay,
                    )
                    _pause(delay, cancel)
            self._ready_for_retry(into, meta, cancel)
            LOG.warning(
                "image %s: attempt %d of %d, from byte 0",
                into.image_id,
                attempt + 1,
                settings.upload_retries + 1,
            )

    def _ready_for_retry(
        self,
        into: _Target,
        meta: ImageMeta,
        cancel: threading.Event | None,
    ) -> None:
        """Have an image that can take data again: the same one once
        Glance has put it back to ``queued``; or, when it stays stuck and
        it is ours (its Glance node died mid-upload), a new one in its
        place.  A caller's stuck image is the caller's to delete.

        :raises ImageStateConflict: a caller's image stays stuck.
        """
        try:
            self._wait_until_queued(into.image_id, cancel)
            return
        except errors.ImageStateConflict:
            if not into.created:
                raise
        stuck = into.image_id
        into.image_id = self._create(meta)
        into.images += 1
        LOG.warning(
            "image %s stayed stuck after a failed upload (its Glance node "
            "died?); uploading into new image %s instead",
            stuck,
            into.image_id,
        )
        try:
            _idempotent(self.client.delete_image, stuck)
        except errors.VolumeImageError as exc:
            LOG.error(
                "stuck image %s could not be deleted (%s): delete it, or "
                "run 'volume-image sweep'",
                stuck,
                exc,
            )

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
            listed = self._ask_for_store(store_id).get(store_id) is not None
        except errors.GlanceError:
            return False
        if listed:
            LOG.warning(
                "Glance refused store %r, but GET /v2/info/stores lists "
                "it: the Glance nodes disagree about their stores",
                store_id,
            )
        return listed

    def _wait_until_queued(
        self, image_id: str, cancel: threading.Event | None
    ) -> None:
        """Wait until Glance has restored the image after a failed send."""
        deadline = time.monotonic() + _QUEUED_WAIT
        while True:
            status = self._image(image_id).get("status")
            if status == "queued":
                return
            if status != "saving" or time.monotonic() > deadline:
                raise errors.ImageStateConflict(
                    f"image {image_id} is {status!r} after a failed upload "
                    "and Glance did not put it back to 'queued'; it cannot "
                    "be retried",
                    image_id=image_id,
                )
            _pause(0.2, cancel)

    def _stream_algo(self) -> str | None:
        """The one digest to compute while streaming: none without
        verification; else the one this Glance was seen to use, or
        ``[volume_image] hash_algo``.
        """
        if not self.settings.verify_upload:
            return None
        learnt = _GLANCE_ALGO.get(self.client.endpoint or "")
        return learnt or self.settings.hash_algo

    def _verify(
        self,
        image_id: str,
        body: MeteredBody,
        target: stores.StoreInfo | None,
        src: Source,
    ) -> tuple[str | None, dict[str, Any]]:
        """Compare what Glance reports with what we sent.

        One digest is compared: Glance's ``os_hash_value`` when Glance
        hashes with the algorithm we streamed, else (an older Glance, or
        another ``hashing_algorithm``) we read the source once more for
        Glance's algorithm, or for the md5 ``checksum`` when that is all
        Glance reports, and remember the algorithm for the next upload.
        Nothing is left unverified silently.

        :returns: the store the image landed in, and Glance's image record.
        :raises IntegrityError: any mismatch, or nothing to compare.
        """
        image = self._image(image_id)
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
                + ". It has been deleted.",
                image_id=image_id,
            )
        where = target.id if target else (landed[0] if landed else None)
        return where, image

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
        assert body.hash is not None
        if body.hash.name == algo:
            ours = body.hash.hexdigest()
        else:
            # rare: learnt once per Glance, then streamed right
            LOG.warning(
                "image %s: Glance reports %s, we streamed %s; reading the "
                "source again to compare %s",
                image_id,
                algo,
                body.hash.name,
                field,
            )
            _GLANCE_ALGO[self.client.endpoint or ""] = algo
            if not src.retriable:
                return (
                    f"Glance reports {algo}, and the source cannot be read "
                    "again to compute it"
                )
            try:
                ours = offload.run(
                    _digest, src, algo, self.settings.chunk_size
                )
            except ValueError:
                return f"{algo} ({field}) is not a digest we can compute"
        if ours != theirs:
            return f"{field} ({algo}) is {theirs}, we sent {ours}"
        return None

    def _name_valid_stores(
        self, exc: errors.UnknownStore, store_id: str | None
    ) -> None:
        """Glance refused the store: say which stores are valid now, or
        that the Glance nodes disagree when another one lists it.
        """
        try:
            catalog = self._ask_for_store(store_id)
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

    def _image(self, image_id: str) -> dict[str, Any]:
        """GET the image, riding out a brief Glance outage."""
        return _idempotent(self.client.get_image, image_id)

    def _cleanup(
        self, image_id: str, created: bool, exc: BaseException
    ) -> None:
        """Delete what this call made; never anything else."""
        try:
            if not created and not isinstance(exc, errors.IntegrityError):
                # a caller's image: only while it holds no data
                status = self._image(image_id).get("status")
                if status not in _CLEANUP_STATES:
                    return
            _idempotent(self.client.delete_image, image_id)
            LOG.info("image %s deleted after a failed upload", image_id)
            if isinstance(exc, errors.UploadCancelled):
                exc.hints.append(f"Image {image_id} was deleted.")
        except errors.VolumeImageError as cleanup_exc:
            hint = (
                f"image {image_id} could not be deleted ({cleanup_exc}); it "
                "may be left in 'saving' state: delete it when Glance is back"
            )
            LOG.error(hint)
            if isinstance(exc, errors.VolumeImageError):
                exc.hints.append(hint)
