"""Draw the upload benchmark's medians as an SVG bar chart for the docs.

No plotting library: three small panels of bars (throughput, CPU, peak
RSS), each method's value printed at its bar, written as plain SVG.

    .venv/bin/python -m bench.plot [bench/results/upload.json] [OUT.svg]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from xml.sax.saxutils import escape

DEFAULT_OUT = Path("doc/source/_static/upload_bench.svg")
LABELS = {
    "ours-verify": "ours, verified",
    "ours-noverify": "ours, no verify",
    "ours-cli": "volume-image upload",
    "curl": "curl -T",
    "glance": "glance image-upload",
    "sdk": "openstacksdk create_image",
}
PANELS = [
    ("mb_s", "throughput (MB/s, higher is better)", "{:.0f}"),
    ("cpu_s_per_gib", "client CPU (s/GiB, lower is better)", "{:.2f}"),
    ("rss_mib", "client peak RSS (MiB, lower is better)", "{:.1f}"),
]
COLOURS = {
    "ours-verify": "#2b6cb0",
    "ours-noverify": "#63a4e8",
    "ours-cli": "#1a4971",
    "curl": "#888888",
    "glance": "#c05621",
    "sdk": "#8a5a9e",
}


def render(summary: dict[str, dict[str, float]], title: str) -> str:
    """The SVG text for ``summary`` (method -> metric -> median)."""
    width, label_w, bar_w, row_h, gap = 760, 170, 500, 22, 44
    methods = [m for m in LABELS if m in summary]
    panel_h = len(methods) * row_h + 30
    height = 40 + len(PANELS) * (panel_h + gap)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" font-family="sans-serif" font-size="13">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="10" y="24" font-size="15" font-weight="bold">'
        f"{escape(title)}</text>",
    ]
    y = 50
    for key, heading, fmt in PANELS:
        top = max(summary[m][key] for m in methods) or 1.0
        out.append(
            f'<text x="10" y="{y + 14}" font-weight="bold">'
            f"{escape(heading)}</text>"
        )
        y += 24
        for m in methods:
            value = summary[m][key]
            w = bar_w * value / top
            out += [
                f'<text x="10" y="{y + 15}">{escape(LABELS[m])}</text>',
                f'<rect x="{label_w}" y="{y + 3}" width="{w:.1f}" '
                f'height="{row_h - 6}" fill="{COLOURS[m]}"/>',
                f'<text x="{label_w + w + 6:.1f}" y="{y + 15}">'
                f"{fmt.format(value)}</text>",
            ]
            y += row_h
        y += gap
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    src = Path(argv[0]) if argv else Path("bench/results/upload.json")
    out = Path(argv[1]) if len(argv) > 1 else DEFAULT_OUT
    doc = json.loads(src.read_text())
    size = doc.get("size_mib", 1024)
    rounds = doc.get("rounds", len(doc["runs"]) // len(doc["summary"]))
    title = (
        f"Upload of a {size} MiB random file to Glance store 'cheap' "
        f"(medians of {rounds} rounds)"
    )
    out.write_text(render(doc["summary"], title))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
