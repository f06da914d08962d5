"""Outcomes of an upload-to-image in cinder-volume, upstream's and ours,
and the table the docs show of both.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

_ID = re.compile(
    r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b"
)
_REQ = re.compile(r"req-[0-9a-f-]{36}")
_URL = re.compile(r"http://127\.0\.0\.1:\d+")
_RPC = re.compile(r" ERROR oslo_messaging\.rpc\.server (?:\[[^\]]*\] )?(.*)")
_PATH = re.compile(r"/\S*/volume-")
# oslo.log repeats the exception being handled after an error's message
_REPEAT = re.compile(r": volume_image\.errors\.\w+: .*$")
# how a cut connection is worded depends on timing (reset, aborted, ...)
_CUT = re.compile(r"(Unable to establish connection to \S+): .*$")


def _normal(text: str) -> str:
    """Without what differs between runs (ids, ports)."""
    text = _CUT.sub(r"\1: (the connection was cut)", text)
    text = _PATH.sub(".../volume-", text)
    text = _REQ.sub("req-…", text)
    text = _ID.sub("…", text)
    return _URL.sub("http://glance", text)


def failure_reason(log: str, backend: str, image_id: str) -> str:
    """Why the upload into ``image_id`` failed, from cinder-volume's log:
    our one-line error for ``ours``; for ``upstream``, the last line of
    the traceback that the RPC server logged after the volume manager
    reported the failure of that image.
    """
    lines = log.splitlines()
    if backend == "ours":
        for line in lines:
            if "volume_image: upload of volume" in line and image_id in line:
                text = line.split(" failed: ", 1)[-1]
                return _normal(_REPEAT.sub("", text))
        return "(no volume_image error logged)"
    marker = (
        f"Upload volume to image encountered an error (image-id: {image_id})"
    )
    for i, line in enumerate(lines):
        if marker not in line:
            continue
        last = ""
        for follow in lines[i + 1 :]:
            match = _RPC.search(follow)
            if match:
                # the traceback's last line is blank
                last = match.group(1).strip() or last
            elif last:
                break
        return _normal(last) or "(no traceback)"
    return "(no error logged)"


@dataclasses.dataclass(frozen=True)
class Outcome:
    volume_status: str
    image: str
    reason: str
    seconds: float = dataclasses.field(compare=False)

    @classmethod
    def of(
        cls,
        volume: dict[str, Any],
        image: dict[str, Any] | None,
        reason: str | None,
        *,
        md5_ok: bool | None,
        seconds: float,
    ) -> Outcome:
        if image is None:
            desc = "none left"
        else:
            desc = (
                f"{image['status']} in {image.get('stores') or '(no store)'}"
            )
            if image["status"] == "active" and md5_ok is not None:
                desc += ", checksum matches" if md5_ok else ", WRONG checksum"
        return cls(str(volume["status"]), desc, reason or "", seconds)

    def cell(self) -> str:
        text = f"volume {self.volume_status}; image {self.image}"
        if self.reason:
            text += f"; log: “{_rst_text(self.reason)}”"
        return text


def _rst_text(text: str) -> str:
    for char in ("\\", "*", "`", "|", "_"):
        text = text.replace(char, "\\" + char)
    return text


def render_table(rows: dict[str, tuple[Outcome, Outcome]]) -> str:
    """The reStructuredText table of the docs (cases in the order run)."""
    out = [
        ".. list-table::",
        "   :header-rows: 1",
        "   :widths: 18 41 41",
        "",
        "   * - case",
        "     - upstream cinder-volume 29",
        "     - with StoreAwareDriver",
    ]
    for case, (upstream, ours) in rows.items():
        out += [
            f"   * - {_rst_text(case)}",
            f"     - {upstream.cell()}",
            f"     - {ours.cell()}",
        ]
    return "\n".join(out) + "\n"
