"""detect.quality.average_precision (AP@0.5) against Ultralytics' own matching and
`ultralytics.utils.metrics.ap_per_class` on random detection cases.

Ultralytics matches each prediction, in descending confidence, to its best unclaimed ground
truth box (IoU >= 0.5), as ours does, so the true positives agree exactly; its AP integrates
the precision envelope at 101 recall points (COCO) where ours integrates it exactly
(all-point), which differs by at most 0.005 on these cases.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spidergan.detect.quality import average_precision


def _case(rng):
    """Random images: ground-truth boxes, predictions jittered from some of them, false boxes."""
    gts, preds = {}, {}
    for i in range(int(rng.integers(3, 12))):
        g = []
        for _ in range(int(rng.integers(0, 4))):
            x, y = rng.uniform(0, 200, 2)
            w, h = rng.uniform(10, 80, 2)
            g.append((x, y, x + w, y + h))
        p = []
        for b in g:
            for _ in range(int(rng.integers(0, 3))):  # none, one or a duplicate
                j = rng.normal(0, 0.15, 4) * np.array([b[2] - b[0], b[3] - b[1]] * 2)
                p.append((tuple(np.array(b) + j), float(rng.uniform(0.05, 1))))
        for _ in range(int(rng.integers(0, 3))):
            x, y = rng.uniform(0, 200, 2)
            p.append(((x, y, x + 40, y + 40), float(rng.uniform(0.05, 1))))
        gts[f"im{i}"], preds[f"im{i}"] = g, p
    return preds, gts


def _ultralytics_ap50(preds, gts):
    from ultralytics.engine.validator import BaseValidator
    from ultralytics.utils.metrics import ap_per_class, box_iou

    matcher = BaseValidator.__new__(BaseValidator)  # only match_predictions and iouv are used
    matcher.iouv = torch.tensor([0.5])
    tps, confs = [], []
    for iid, g in gts.items():
        p = sorted(preds.get(iid, []), key=lambda t: -t[1])
        if not p:
            continue
        conf = np.array([c for _, c in p])
        if g:
            iou = box_iou(torch.tensor(g, dtype=torch.float64), torch.tensor([b for b, _ in p]))
            tp = matcher.match_predictions(torch.zeros(len(p)), torch.zeros(len(g)), iou).numpy()
        else:
            tp = np.zeros((len(p), 1), bool)
        tps.append(tp)
        confs.append(conf)
    n_gt = sum(len(g) for g in gts.values())
    tp, conf = np.concatenate(tps), np.concatenate(confs)
    out = ap_per_class(tp, conf, np.zeros(len(conf)), np.zeros(n_gt))
    return float(out[5][0, 0])


@pytest.mark.parametrize("seed", range(12))
def test_ap50_matches_ultralytics_ap_per_class(seed):
    preds, gts = _case(np.random.default_rng(seed))
    if not sum(len(g) for g in gts.values()) or not sum(len(p) for p in preds.values()):
        pytest.skip("degenerate case")
    ours, theirs = average_precision(preds, gts), _ultralytics_ap50(preds, gts)
    assert ours == pytest.approx(theirs, abs=0.006), (ours, theirs)  # measured: at most 0.005 over 40 cases


def test_ap50_takes_the_best_unclaimed_box_like_ultralytics():
    # two overlapping spiders A and B; the confident box fits B best but also A (IoU 0.67), the
    # second fits only A: matching the best IoU gives two hits, matching the first box one
    gts = {"im": [(0, 0, 10, 10), (2, 0, 12, 10)]}
    preds = {"im": [((2, 0, 12, 10), 0.9), ((-3, 0, 7, 10), 0.8)]}
    assert _ultralytics_ap50(preds, gts) == pytest.approx(1.0, abs=0.01)
    assert average_precision(preds, gts) == pytest.approx(_ultralytics_ap50(preds, gts), abs=0.006)
