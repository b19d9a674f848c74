"""Pictures for people: image grids, contact sheets (one row per group) and labelled pairs.

Every function returns an RGB PIL image; the caller saves it (atomically) as a PNG plot. Cells are
square thumbnails, the image fitted inside without distortion; labels are drawn under a cell in
Pillow's built-in font, so nothing is looked up or downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from PIL import Image, ImageDraw, ImageFont

BACKGROUND = (255, 255, 255)
EMPTY_CELL = (235, 235, 235)
TEXT = (20, 20, 20)
LABEL_H = 13


def _font():
    return ImageFont.load_default()


def _as_image(im) -> Image.Image | None:
    if im is None:
        return None
    if isinstance(im, (str, Path)):
        try:
            from spidergan import images

            return images.load_rgb(im)
        except Exception:  # a missing picture is drawn as an empty cell, not a crash
            return None
    return im


def thumbnail(im, cell: int) -> Image.Image:
    """`im` (PIL image or path) fitted into a cell x cell square; an empty grey cell if None."""
    canvas = Image.new("RGB", (cell, cell), EMPTY_CELL)
    im = _as_image(im)
    if im is None:
        return canvas
    im = im.convert("RGB")
    scale = cell / max(im.size)
    size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
    small = im.resize(size, Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.NEAREST)
    canvas.paste(small, ((cell - size[0]) // 2, (cell - size[1]) // 2))
    return canvas


def _fit_text(draw: ImageDraw.ImageDraw, text: str, width: int) -> str:
    font = _font()
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def contact_sheet(rows: Sequence[Sequence], labels: Sequence[Sequence[str]] | None = None,
                  titles: Sequence[str] | None = None, cell: int = 96, pad: int = 4) -> Image.Image:
    """One row of thumbnails per entry of `rows`, each cell optionally labelled, each row
    optionally titled above. Rows may differ in length."""
    rows = [list(r) for r in rows]
    cols = max((len(r) for r in rows), default=0)
    if not rows or cols == 0:
        return message("nothing to show", cell * 3)
    has_labels = labels is not None
    title_h = LABEL_H if titles else 0
    row_h = title_h + cell + (LABEL_H if has_labels else 0) + pad
    sheet = Image.new("RGB", (pad + cols * (cell + pad), pad + len(rows) * row_h), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    for r, row in enumerate(rows):
        y = pad + r * row_h
        if titles:
            draw.text((pad, y), _fit_text(draw, titles[r], sheet.width - 2 * pad), fill=TEXT, font=_font())
        for c, im in enumerate(row):
            x = pad + c * (cell + pad)
            sheet.paste(thumbnail(im, cell), (x, y + title_h))
            if has_labels and c < len(labels[r]):
                draw.text((x, y + title_h + cell), _fit_text(draw, labels[r][c], cell),
                          fill=TEXT, font=_font())
    return sheet


def grid(imgs: Sequence, cols: int = 8, cell: int = 96, pad: int = 4,
         labels: Sequence[str] | None = None) -> Image.Image:
    """Images in a grid, `cols` per row, optionally labelled."""
    imgs = list(imgs)
    cols = max(1, cols)
    rows = [imgs[i:i + cols] for i in range(0, len(imgs), cols)]
    lab = None if labels is None else [list(labels[i:i + cols]) for i in range(0, len(imgs), cols)]
    return contact_sheet(rows, lab, cell=cell, pad=pad)


def pairs(items: Sequence[tuple], cell: int = 96, pad: int = 4, per_row: int = 2) -> Image.Image:
    """Side-by-side pairs: each item is (left, right, caption). `per_row` pairs per row."""
    items = list(items)
    if not items:
        return message("no pairs", cell * 3)
    rows, labels = [], []
    for i in range(0, len(items), per_row):
        chunk = items[i:i + per_row]
        rows.append([im for a, b, _ in chunk for im in (a, b)])
        labels.append([t for _, _, cap in chunk for t in (cap, "")])
    return contact_sheet(rows, labels, cell=cell, pad=pad)


def message(text: str, width: int = 300) -> Image.Image:
    """A small picture that says why there is nothing to show (plots must still exist)."""
    im = Image.new("RGB", (max(width, 120), 40), BACKGROUND)
    ImageDraw.Draw(im).text((8, 14), text, fill=TEXT, font=_font())
    return im
