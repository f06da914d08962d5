"""The keystoneauth1 boundary shared by the Glance and block-storage
clients: reading an answer within bounds, the endpoint an adapter points
at, and a connection failure in a few words.

Each service module turns keystoneauth1 and requests exceptions into its
own :mod:`volume_image.errors` (the words differ: "Glance is
unavailable" versus "the block-storage API is unavailable"); what they
share lives here, so that neither imports the other.
"""

from __future__ import annotations

import logging
import re
import time
import urllib.parse
from typing import Any

import requests
import urllib3
from keystoneauth1 import adapter as ks_adapter
from keystoneauth1 import exceptions as ks_exc

from volume_image.core import deadline

__all__ = [
    "OutOfTime",
    "TooLarge",
    "TooSlow",
    "describe_failure",
    "endpoint_of",
    "foreign_link",
    "is_outage",
    "keystone_detail",
    "read_capped",
    "send",
]

LOG = logging.getLogger(__name__)

# seconds before the first new try of a refused connection (keystoneauth's)
_CONNECT_RETRY_DELAY = 0.5
#: seconds one answer may take to arrive whole ([volume_image]
#: answer_deadline)
DEFAULT_ANSWER_DEADLINE = 120.0


class TooLarge(Exception):
    """An answer's body exceeded the cap (see :func:`read_capped`)."""


class TooSlow(Exception):
    """An answer's body did not arrive whole by the deadline."""


class OutOfTime(Exception):
    """The operation's deadline (:mod:`volume_image.deadline`) passed."""


def send(
    adapter: ks_adapter.Adapter,
    method: str,
    url: str,
    *,
    cap: int,
    answer_deadline: float,
    connect_retries: int | None = None,
    data_flow: bool = False,
    **kwargs: Any,
) -> requests.Response:
    """One request to an OpenStack API through ``adapter``, the way every
    request of ours goes: no redirect followed (it would carry the
    token), the answer read whole under ``cap`` bytes and within
    ``answer_deadline`` seconds, everything cut to what is left of the
    operation's deadline.

    A connection that could not be made (refused, unreachable) is tried
    again, up to ``connect_retries`` times (the adapter's by default),
    while the deadline allows; a GET, HEAD or DELETE also after a cut
    connection, which repeating cannot harm.  A timeout never is:
    keystoneauth would retry it as if refused, each time costing the
    whole timeout again.

    :param data_flow: the request sends a volume's data: its timeouts are
        the caller's (per socket operation), not cut to the deadline, and
        the answer's clock starts once the data is sent.

    :raises OutOfTime: the deadline passed before an attempt.
    :raises TooLarge: see :func:`read_capped`.
    :raises TooSlow: see :func:`read_capped`.
    :raises keystoneauth1.exceptions.ClientException: the request failed.
    :raises requests.RequestException: reading the answer failed.
    """
    retries = adapter.connect_retries or 0
    if connect_retries is not None:
        retries = connect_retries
    for attempt in range(retries + 1):
        left = None if data_flow else deadline.remaining()
        limit = answer_deadline
        if left is not None:
            if left <= 0:
                raise OutOfTime()
            kwargs["timeout"] = _cut(
                kwargs.get("timeout") or adapter.session.timeout, left
            )
            limit = min(limit, left)
        started = time.monotonic()
        try:
            resp = adapter.request(
                url,
                method,
                raise_exc=False,
                redirect=False,
                stream=True,
                connect_retries=0,
                **kwargs,
            )
        except ks_exc.ConnectFailure as exc:
            delay = min(_CONNECT_RETRY_DELAY * 2**attempt, 8.0)
            left = deadline.remaining()
            if (
                attempt == retries
                or (left is not None and left < delay)
                or not (method in _IDEMPOTENT or _not_sent(exc))
            ):
                raise
            LOG.debug("%s %s failed; again in %.1fs", method, url, delay)
            time.sleep(delay)
            continue
        if data_flow:
            # the body took what the volume needs: the answer's own
            # clock starts now
            started = time.monotonic()
        read_capped(resp, cap, started + limit)
        return resp
    raise AssertionError("unreachable")


_IDEMPOTENT = frozenset({"GET", "HEAD", "DELETE"})


def _not_sent(exc: BaseException) -> bool:
    """Whether a connection failure happened before the request could be
    sent (refused, unreachable, no such host): only then may a POST or
    PUT be sent again without risk of doing it twice.
    """
    seen: BaseException | None = exc
    for _ in range(8):  # keystoneauth chains requests', which wraps urllib3's
        if seen is None:
            return False
        if isinstance(
            seen,
            urllib3.exceptions.NewConnectionError | ConnectionRefusedError,
        ):
            return True
        reason = getattr(seen, "reason", None)
        if isinstance(reason, urllib3.exceptions.NewConnectionError):
            return True
        args = getattr(seen, "args", ())
        nested = (
            args[0] if args and isinstance(args[0], BaseException) else None
        )
        seen = nested or seen.__cause__ or seen.__context__
    return False


def _cut(timeout: Any, left: float) -> Any:
    """``timeout`` (seconds, a (connect, read) pair, or None for none)
    made no longer than ``left`` seconds.
    """
    if isinstance(timeout, tuple):
        return tuple(left if t is None else min(t, left) for t in timeout)
    return left if timeout is None else min(timeout, left)


def _read(raw: Any) -> bytes:
    try:
        return bytes(raw.read1(64 * 1024, decode_content=True))
    except AttributeError:  # a test double without read1
        return bytes(raw.read(64 * 1024, decode_content=True))


def read_capped(
    resp: requests.Response, cap: int, deadline: float | None = None
) -> None:
    """Read a streamed answer's body, at most ``cap`` bytes and until the
    ``time.monotonic()`` ``deadline`` at the latest, into ``resp``
    (``resp.content`` and ``resp.json()`` work afterwards).

    Each read returns what has arrived (``read1``), so a server that
    trickles a byte at a time is cut at the deadline, not after it.

    :raises TooLarge: the body is longer; the connection is closed.
    :raises TooSlow: the deadline passed first; the connection is closed.
    :raises requests.RequestException: the connection failed mid-answer
        (``requests.ReadTimeout`` when it stalled), as requests would
        raise it, never urllib3's own exceptions.
    """
    consumed = getattr(resp, "_content_consumed", False)
    if consumed and isinstance(resp._content, bytes):
        # keystoneauth1 read the whole body already, to log it: its
        # session logger is at DEBUG (``--debug``, or ``openstack``'s
        # logging set-up); the raw stream is empty now
        if len(resp._content) > cap:
            resp.close()
            raise TooLarge(len(resp._content))
        return
    raw = resp.raw
    chunks = []
    total = 0
    while True:
        try:
            chunk = _read(raw)
        except urllib3.exceptions.ReadTimeoutError as exc:
            resp.close()
            raise requests.exceptions.ReadTimeout(exc) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            # cut mid-answer: as requests would say it
            resp.close()
            raise requests.exceptions.ConnectionError(exc) from exc
        if not chunk:
            break
        total += len(chunk)
        if total > cap:
            resp.close()
            raise TooLarge(total)
        if deadline is not None and time.monotonic() > deadline:
            resp.close()
            raise TooSlow(total)
        chunks.append(chunk)
    resp._content = b"".join(chunks)


_KS_SUFFIX = re.compile(r"\s*\((?:HTTP \d+|Request-ID: [^)]*)\)")
_ERRNO = re.compile(r"\[Errno -?\d+\] ([^'\")]+)")


def endpoint_of(adapter: ks_adapter.Adapter) -> str | None:
    """The URL ``adapter`` is configured to send to, or None (when it is
    found in a service catalog).  For error messages: it never raises and
    never asks Keystone for a token or a catalog.
    """
    # the "none" and "admin_token" plugins carry a fixed endpoint
    plugin = adapter.auth or adapter.session.auth
    url = adapter.endpoint_override or getattr(plugin, "endpoint", None)
    return str(url) if url else None


def describe_failure(exc: Exception) -> str:
    """The root cause of a connection failure, in a few words."""
    if isinstance(exc, ks_exc.ConnectTimeout | requests.Timeout):
        return "timed out"
    if isinstance(exc, ks_exc.SSLError | requests.exceptions.SSLError):
        return f"TLS error ({exc})"
    match = _ERRNO.search(str(exc))
    if match:
        return match.group(1).strip().lower()
    text = str(exc)
    for marker in ("Connection aborted", "RemoteDisconnected", "reset"):
        if marker in text:
            return "the connection was cut"
    return text


def is_outage(status: int | None) -> bool:
    """Whether an HTTP status says the service cannot answer now (5xx,
    429), rather than that the request is wrong.
    """
    return status is not None and (status >= 500 or status == 429)


def keystone_detail(exc: ks_exc.HttpError) -> str:
    """keystoneauth1's message of an HTTP error, without the status and
    request id it repeats (the caller shows those itself).
    """
    return _KS_SUFFIX.sub("", str(exc.message)).rstrip(".")


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin(url: str) -> tuple[str, str, int | None] | None:
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port or _DEFAULT_PORTS.get(scheme)
    except ValueError:
        return None
    return scheme, (parts.hostname or "").lower(), port


def foreign_link(link: str, page_url: str | None) -> str | None:
    """Why a link a server sent (a next page) must not be followed, or
    None when it stays on the origin of ``page_url``, the page that gave
    it.  Our token goes wherever we send a request, so a link is followed
    only on the same scheme, host and port, as redirects never are.

    :param link: a path (``/v2/images?marker=x``) or an absolute URL.
    """
    if any(ord(char) < 0x21 or char in "\\\x7f" for char in link):
        return "it holds a control character, a space or a backslash"
    parts = urllib.parse.urlsplit(link)
    if not parts.scheme and not parts.netloc:
        return None  # a path: joined to the endpoint, so its origin
    there = _origin(link)
    here = _origin(page_url or "")
    if there is None or here is None or not here[1] or there != here:
        return (
            f"it points to {parts.scheme}://{parts.netloc}, not to the "
            "endpoint's origin"
        )
    return None
