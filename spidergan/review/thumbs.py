"""Thumbnails for the review page: made once with PIL, cached under `.spidergan/thumbs/`.

The cache key hashes the source's resolved path, modification time (ns), byte size and the
thumbnail size, so a changed source gets a new thumbnail and an unchanged one is never redone.
Sources are decoded through `images.load_rgb` (EXIF orientation applied, as detect saw them).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from PIL import Image

from spidergan import atomic
from spidergan.images import load_rgb

SIZES = (128, 256, 512, 1024)  # longest side; any other request is rounded up to one of these
QUALITY = 85


def pick_size(requested: int) -> int:
    for s in SIZES:
        if requested <= s:
            return s
    return SIZES[-1]


def cache_key(src: Path, size: int) -> str:
    st = src.stat()
    ident = f"{src.resolve()}|{st.st_mtime_ns}|{st.st_size}|{size}"
    return hashlib.sha256(ident.encode()).hexdigest()[:40]


def thumbnail(src: str | Path, size: int, cache_dir: str | Path) -> tuple[Path, str]:
    """Path of the cached JPEG thumbnail of `src` (longest side <= size) and its cache key.

    Raises `images.ImageRejected` when the source does not decode.
    """
    src, size = Path(src), pick_size(size)
    key = cache_key(src, size)
    out = Path(cache_dir) / key[:2] / f"{key}.jpg"
    if not out.exists():
        im = load_rgb(src)
        im.thumbnail((size, size), Image.Resampling.LANCZOS, reducing_gap=3.0)  # never enlarges
        atomic.save_image(out, im, quality=QUALITY)
    return out, key
