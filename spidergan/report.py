"""A self-contained HTML report: metrics table, notes and PNG pictures inlined as data URIs.

DVC's plot pages load Vega from a CDN and stay blank offline; this file needs no network, no
server and no other file: it can be mailed or opened from an archive.
"""

from __future__ import annotations

import base64
import html
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

from spidergan import atomic


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def _table(rows: dict) -> str:
    body = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_fmt(v))}</td></tr>"
                   for k, v in rows.items())
    return f"<table>{body}</table>"


def render(title: str, metrics: dict, pictures: Sequence[tuple[str, str | Path]] = (),
           params: dict | None = None, notes: dict | None = None) -> str:
    numbers = {k: v for k, v in sorted(metrics.items()) if not str(k).endswith("_warning")
               and not (notes and k in notes)}
    parts = [f"<h1>{html.escape(title)}</h1>",
             f"<p class=meta>written {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC</p>",
             "<h2>Metrics</h2>", _table(numbers)]
    if notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(
            f"<li><b>{html.escape(k)}</b>: {html.escape(str(v))}</li>" for k, v in notes.items())
            + "</ul>")
    for caption, path in pictures:
        path = Path(path)
        if not path.is_file():
            parts.append(f"<h2>{html.escape(caption)}</h2><p>(missing: {html.escape(str(path))})</p>")
            continue
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        parts.append(f"<h2>{html.escape(caption)}</h2>"
                     f"<img alt=\"{html.escape(path.name)}\" src=\"data:image/png;base64,{data}\">")
    if params is not None:
        parts.append("<h2>Parameters</h2><pre>" + html.escape(json.dumps(params, indent=2))
                     + "</pre>")
    style = ("body{font-family:sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse}"
             "th,td{border:1px solid #ccc;padding:2px 8px;text-align:left}td{font-family:monospace}"
             "img{max-width:100%;image-rendering:pixelated}.meta{color:#666}")
    return ("<!doctype html><html><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{style}</style></head><body>"
            + "\n".join(parts) + "</body></html>\n")


def write_html(path: str | Path, title: str, metrics: dict,
               pictures: Sequence[tuple[str, str | Path]] = (), params: dict | None = None,
               notes: dict | None = None) -> None:
    atomic.write_text(path, render(title, metrics, pictures, params, notes))
