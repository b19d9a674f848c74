"""Grids, contact sheets and pair pictures: sizes, placement, empty inputs."""

import numpy as np
from PIL import Image

from spidergan import sheets


def test_grid_places_thumbnails_in_rows():
    reds = [Image.new("RGB", (40, 20), (255, 0, 0))] * 5
    g = sheets.grid(reds, cols=2, cell=32, pad=4)
    assert g.size == (4 + 2 * 36, 4 + 3 * 36)
    a = np.asarray(g)
    assert tuple(a[4 + 16, 4 + 16]) == (255, 0, 0)      # centre of the first cell
    assert tuple(a[4 + 2, 4 + 16]) == sheets.EMPTY_CELL  # letterbox above a wide image
    assert tuple(a[2 * 36 + 4 + 16, 36 + 4 + 16]) == sheets.BACKGROUND  # no sixth image


def test_contact_sheet_rows_labels_titles_and_paths(tmp_path):
    Image.new("L", (10, 30), 200).save(tmp_path / "a.png")
    sheet = sheets.contact_sheet([[tmp_path / "a.png", tmp_path / "missing.png"], [Image.new("RGB", (5, 5))]],
                                 labels=[["kept 300px", "a very long label that does not fit"], ["x"]],
                                 titles=["group 1", "group 2"], cell=24)
    assert sheet.mode == "RGB" and sheet.width == 4 + 2 * 28
    assert sheet.height == 4 + 2 * (sheets.LABEL_H + 24 + sheets.LABEL_H + 4)


def test_pairs_and_empty():
    p = sheets.pairs([(Image.new("RGB", (8, 8), (0, 0, 255)), Image.new("RGB", (8, 8)), "d=3")] * 3,
                     cell=16, per_row=2)
    assert p.width == 4 + 4 * 20
    assert sheets.pairs([]).size[0] > 0 and sheets.contact_sheet([]).size[0] > 0
