"""The one exception tree of ``volume_image``.

It branches by what the caller does next::

    VolumeImageError                 base; never raised itself
    |
    +-- SpecError                    the operator fixes the extra spec
    |   |                            (exit 3, HTTP 400)
    |   +-- InvalidStoreId           empty, too long, spaces, control chars
    |   +-- ReservedStore            os_glance_* is Glance's own
    |   +-- UnknownStore             not in GET /v2/info/stores
    |   +-- ReadOnlyStore            the store takes no uploads
    |   +-- UnknownSpecKey           image_service:<typo>
    |   +-- ConflictingSpecKeys      the same key twice, in other cases
    |   +-- MultiStoreDisabled       this Glance has no enabled_backends:
    |                                no store can be named there
    |
    +-- GlanceError                  Glance could not be asked, or answered
    |   |                            nonsense (exit 4)
    |   +-- GlanceUnavailable        refused, timed out, 5xx: retry later
    |   |                            (HTTP 503)
    |   +-- GlanceAuthError          401/403: fix credentials or roles
    |   +-- BadStoreCatalog          /v2/info/stores answer is unusable
    |   +-- GlanceRequestError       any other unexpected answer
    |   +-- StoreCheckUnavailable    the API hook could not ask Glance:
    |                                nothing stored, retry (HTTP 503)
    |
    +-- BlockStorageError            the block-storage API (Cinder) could
    |                                not be asked, for ``audit`` (exit 4)
    |
    +-- UploadError                  the upload failed; it cleaned up
        |                            (exit 5)
        +-- UploadCancelled          cancelled by the caller
        +-- ImageStateConflict       409: the image is not queued
        +-- QuotaExceeded            413: quota, size cap or store full
        +-- FormatRejected           415: Glance refused the disk format
        +-- IntegrityError           what Glance stored is not what we sent
        +-- ColocationError          strict co-location: a store of the
                                     base image did not get the image
        +-- ConversionError          qemu-img failed
        +-- InsufficientSpace        no room to convert
        +-- SourceError              the volume cannot be read
            +-- UnsafeSource         its header names a backing file or
                                     data file, or is not its format

Every error carries the HTTP status an API answers with when the error
stops a request (:attr:`VolumeImageError.api_status`; the status *Glance*
answered, if any, is :attr:`~VolumeImageError.status_code`), the CLI exit
code (:attr:`VolumeImageError.exit_code`) and, when Glance answered, the
Glance request id and endpoint.

``str(exc)`` is the message an API may show its caller: what is wrong and
what to do.  The context only an operator needs (the endpoint, Glance's
status and request id) is in attributes and in
:meth:`VolumeImageError.details`, for logs and the command line.
"""

from __future__ import annotations

__all__ = [
    "BadStoreCatalog",
    "BlockStorageError",
    "ColocationError",
    "ConflictingSpecKeys",
    "ConversionError",
    "FormatRejected",
    "GlanceAuthError",
    "GlanceError",
    "GlanceRequestError",
    "GlanceUnavailable",
    "ImageStateConflict",
    "InsufficientSpace",
    "IntegrityError",
    "InvalidStoreId",
    "MultiStoreDisabled",
    "QuotaExceeded",
    "ReadOnlyStore",
    "ReservedStore",
    "SourceError",
    "SpecError",
    "StoreCheckUnavailable",
    "UnknownSpecKey",
    "UnknownStore",
    "UnsafeSource",
    "UploadCancelled",
    "UploadError",
    "VolumeImageError",
]


class VolumeImageError(Exception):
    """Base of every error ``volume_image`` raises.

    Fix: see the subclass; the message says what to do.

    :param message: one sentence that says what is wrong and what to do.
    :param status_code: the HTTP status Glance answered, if any.
    :param request_id: Glance's ``x-openstack-request-id``, if any.
    :param endpoint: the Glance URL that was asked, if any.
    """

    #: the HTTP status an API answers with when this error stops a
    #: request (not keystoneauth's ``http_status``, which is the remote's)
    api_status = 500
    #: the exit code of the ``volume-image`` command
    exit_code = 1

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        request_id: str | None = None,
        endpoint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.request_id = request_id
        self.endpoint = endpoint
        #: what the caller should know beyond the message (e.g. cleanup
        #: that could not be done)
        self.hints: list[str] = []

    def __str__(self) -> str:
        return " ".join([self.message, *self.hints])

    def details(self) -> str:
        """The message with the context an operator needs, for logs and
        the command line: the endpoint and Glance's request id.
        """
        extra = []
        if self.endpoint:
            extra.append(f"endpoint {self.endpoint}")
        if self.request_id:
            extra.append(f"request id {self.request_id}")
        text = self.message
        if extra:
            text = f"{text} ({', '.join(extra)})"
        return " ".join([text, *self.hints])


class SpecError(VolumeImageError):
    """The extra spec is wrong; an operator has to change it.

    Fix: the message names the key, the value and a valid choice.
    """

    api_status = 400
    exit_code = 3

    def __init__(
        self,
        message: str,
        *,
        key: str | None = None,
        value: object = None,
        suggestion: str | None = None,
        **kwargs: object,
    ) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.key = key
        self.value = value
        self.suggestion = suggestion


class InvalidStoreId(SpecError):
    """The store id is not a well-formed value.

    Fix: a non-empty string of at most 255 characters, without control
    characters or surrounding whitespace.
    """


class ReservedStore(SpecError):
    """The store id uses Glance's reserved ``os_glance_`` prefix.

    Fix: choose a store that ``volume-image stores`` lists.
    """


class UnknownStore(SpecError):
    """Glance has no store with this id.

    Fix: use the suggested id or one ``volume-image stores`` lists, or
    unset the spec to use Glance's default store.
    """


class ReadOnlyStore(SpecError):
    """The store exists but accepts no new image data.

    Fix: choose one of the writable stores the message lists.
    """


class UnknownSpecKey(SpecError):
    """A key in the ``image_service:`` namespace that Cinder would ignore:
    unknown (a typo) or, where specs are written, not lower-case.

    Fix: use the suggested key.
    """


class ConflictingSpecKeys(SpecError):
    """The same ``image_service:`` key appears twice in different cases.

    Fix: keep only the lower-case key.
    """


class MultiStoreDisabled(SpecError):
    """Glance runs without multi-store, so no store can be named there.

    It is the spec that cannot be honoured, so it is a spec problem (exit
    3, HTTP 400), whatever Glance answered.

    Fix: unset the spec, or configure ``enabled_backends`` in Glance.
    """


class GlanceError(VolumeImageError):
    """Glance could not be asked, refused us, or answered nonsense.

    Fix: see the subclass; the message names the endpoint.
    """

    exit_code = 4
    api_status = 503


class GlanceUnavailable(GlanceError):
    """Connection refused, timed out, or a 5xx answer.

    Fix: try again later; check that Glance runs at the endpoint named.
    """

    #: the request timed out (Glance hangs) rather than being refused or
    #: answered: asking again at once would only wait as long again
    timed_out = False
    #: seconds Glance asked to wait before asking again (``Retry-After``
    #: of a 503), or None
    retry_after: float | None = None


class GlanceAuthError(GlanceError):
    """Glance (or Keystone) answered 401 or 403.

    Fix: check the credentials, and that the user has the role Glance
    asks for (member to upload).
    """

    api_status = 403


class BadStoreCatalog(GlanceError):
    """The ``/v2/info/stores`` answer cannot be used.

    Fix: check that the endpoint is Glance's (not a proxy's error page)
    and that its store configuration is consistent.
    """


class GlanceRequestError(GlanceError):
    """Glance answered with a status we have no better class for.

    Fix: read Glance's message and its log for the request id given.
    """

    api_status = 502


class StoreCheckUnavailable(GlanceError):
    """An API hook could not check a store because Glance could not be
    asked (unreachable, refused our credentials, or answered nonsense).

    Whatever the Glance-side cause, the API's caller did nothing wrong
    and can retry: an API answers 503.  The cause is chained.

    Fix: retry when Glance answers; the API's log has the cause.
    """

    api_status = 503


class BlockStorageError(VolumeImageError):
    """The block-storage API could not be asked or refused us.

    Fix: give ``--block-storage-endpoint`` or credentials whose catalog
    lists it, with the admin role to see every type.
    """

    exit_code = 4
    api_status = 502


class UploadError(VolumeImageError):
    """The upload failed, and what it created has been cleaned up.

    Fix: see the subclass; the message names the image.
    """

    exit_code = 5

    def __init__(
        self,
        message: str,
        *,
        image_id: str | None = None,
        **kwargs: object,
    ) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.image_id = image_id


class UploadCancelled(UploadError):
    """The caller cancelled the upload; the image was deleted.

    Fix: none needed.
    """


class ImageStateConflict(UploadError):
    """Glance answered 409: the image is not ``queued``.

    Fix: upload into a new image, or one still ``queued``.
    """

    api_status = 409


class QuotaExceeded(UploadError):
    """Glance answered 413: quota, image size cap or store full.

    Fix: raise the quota or ``image_size_cap``, or free the store.
    """

    api_status = 413


class FormatRejected(UploadError):
    """Glance answered 415: it refused the data or its disk format.

    Fix: use a ``disk_format`` Glance accepts.
    """

    api_status = 415


class IntegrityError(UploadError):
    """What Glance stored differs from what we sent; the image is gone.

    Fix: upload again; if it repeats, check the store's disk and any
    proxy between here and Glance.
    """


class ColocationError(UploadError):
    """Strict co-location: the image did not reach every writable store
    of its base image (a copy failed, was not permitted, or did not
    finish in time); the image was deleted.

    Fix: give the copy credentials ([volume_image_copy]) the admin role,
    or read the per-store reasons in the message; or turn
    ``[volume_image] colocate_strict`` off to keep partial results.
    """


class ConversionError(UploadError):
    """``qemu-img convert`` (or compression) failed.

    Fix: check ``--source-format`` and qemu-img's message.
    """


class InsufficientSpace(UploadError):
    """The conversion directory has too little free space.

    Fix: free space or point ``[volume_image] conversion_dir`` elsewhere.
    """


class SourceError(UploadError):
    """The volume cannot be opened or read.

    Fix: check the path and the permissions.
    """

    api_status = 400


class UnsafeSource(SourceError):
    """The volume's image header is not safe to hand to qemu-img: it is
    not the format it is said to be, or it names a backing file, an
    external data file or fails another format-inspector check.  Nothing
    was converted or sent.

    Fix: flatten the volume's image (no backing or data file), or upload
    a raw volume.
    """
