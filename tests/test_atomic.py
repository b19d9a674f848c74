"""atomic.write_metrics: what reaches a DVC metrics file."""

import json

from spidergan import atomic


def test_metrics_files_hold_numbers_only(tmp_path):
    m = {"kept": 5, "iou": 0.5, "method": "grabcut", "sha256": "ab12", "none": None,
         "sizes": [1, 2], "ok": True,
         "reasons": {"too_small": 2, "note": "words"}, "empty": {"detail": "x"}}
    atomic.write_metrics(tmp_path / "m.json", m)
    assert json.loads((tmp_path / "m.json").read_text()) == {
        "kept": 5, "iou": 0.5, "ok": True, "reasons": {"too_small": 2}, "empty": {}}
