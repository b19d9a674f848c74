"""Self-training rounds: confident predictions on unlabelled images, gated by review, become labels.

The original project's lesson: never train one model on another model's output without review.
A round therefore goes:

1. The current detector predicts on every raw image that has no label. Each box with confidence
   at least `selftrain.accept_conf` is a candidate, written to `data/detector/candidates.jsonl`
   as {"kind": "detection", "image_id", "box", "conf", "round"}: the review app shows these.
2. With `require_review: true` (default) a candidate counts only when the review decisions file
   (`data/review/decisions.jsonl`, format in `spidergan.review.decisions`) accepts it. An image
   becomes a label once every one of its candidates is decided: the accepted boxes are its
   spiders, rejected ones are dropped. An image with an undecided candidate waits, since
   training on half of its spiders would teach the detector that the other half is background.
3. With `require_review: false` nobody looks: an image is taken when all its candidates reach
   the stricter `unreviewed_conf`; an image with a candidate between the two thresholds is
   ambiguous and skipped. The metrics say how many labels were taken unreviewed.
4. With new labels the detector is fine-tuned from the round before for `selftrain.epochs` and
   its val metrics recorded as `round_<n>` (the val split never changes, so rounds compare).
   A round without new labels ends the rounds: the same model would propose the same boxes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from spidergan import images
from spidergan.detect.model import Detector
from spidergan.params import DetectParams, SelftrainParams
from spidergan.review.decisions import DetectionDecisions


def candidates(weights, records: dict, raw_dir, labelled: set, p: DetectParams, rnd: int) -> list:
    """Candidate boxes (conf >= accept_conf) on every unlabelled raw image."""
    todo = [r for i, r in sorted(records.items()) if i not in labelled]
    if not todo:
        return []
    det = Detector(weights, p, conf=p.selftrain.accept_conf)
    out = []
    for start in range(0, len(todo), p.predict_batch):
        batch = []
        for rec in todo[start:start + p.predict_batch]:
            try:
                batch.append((rec["id"], np.asarray(images.load_rgb(Path(raw_dir) / rec["file"]))))
            except images.ImageRejected:
                continue  # the detect stage reports it; nothing to propose here
        for (iid, _), boxes in zip(batch, det.predict([a for _, a in batch])):
            for b in boxes:
                if b["conf"] >= p.selftrain.accept_conf:
                    out.append({"kind": "detection", "image_id": iid, "box": b["box"],
                                "conf": b["conf"], "round": rnd})
    return out


def select(cands: list, decisions: DetectionDecisions, sp: SelftrainParams) -> tuple[dict, dict]:
    """New labels {image id: boxes} from this round's candidates, and the counts."""
    by_image: dict = {}
    for c in cands:
        by_image.setdefault(c["image_id"], []).append(c)
    counts = {"candidates": len(cands), "candidate_images": len(by_image), "accepted": 0,
              "rejected": 0, "undecided": 0, "unreviewed_taken": 0, "ambiguous_images": 0,
              "new_label_images": 0}
    new: dict = {}
    for iid, cs in sorted(by_image.items()):
        if sp.require_review:
            recs = [decisions.match(iid, c["box"]) for c in cs]
            verdicts = [r["decision"] if r else None for r in recs]
            counts["accepted"] += verdicts.count("accept")
            counts["rejected"] += verdicts.count("reject")
            counts["undecided"] += verdicts.count(None)
            if None in verdicts:
                continue
            # the reviewer's box: it may have been dragged to fit the spider better
            new[iid] = [[float(v) for v in r["box"]] for r in recs if r["decision"] == "accept"]
        else:
            if any(c["conf"] < sp.unreviewed_conf for c in cs):
                counts["ambiguous_images"] += 1
                continue
            new[iid] = [c["box"] for c in cs]
            counts["unreviewed_taken"] += len(cs)
    counts["new_label_images"] = len(new)
    counts["new_labels"] = sum(len(v) for v in new.values())
    return new, counts


def describe(rnd: int, entry: dict, sp: SelftrainParams) -> str:
    """One line for people: what a round proposed, what the review decided, and what happens."""
    head = (f"self-training round {rnd}: {entry.get('candidates', 0)} candidates on "
            f"{entry.get('candidate_images', 0)} unlabelled images (conf >= {sp.accept_conf})")
    if sp.require_review:
        head += (f"; reviewed: accepted {entry.get('accepted', 0)}, rejected "
                 f"{entry.get('rejected', 0)}, undecided {entry.get('undecided', 0)}")
    else:
        head += (f"; taken unreviewed {entry.get('unreviewed_taken', 0)} boxes, ambiguous "
                 f"{entry.get('ambiguous_images', 0)} images")
    if entry.get("retrained") or entry.get("reused"):
        return head + f"; retrained on {entry.get('new_label_images', 0)} new labelled images"
    if sp.require_review and entry.get("undecided"):
        why = ("not retrained: waiting for review (spidergan review, or lines in "
               "data/review/decisions.jsonl), then dvc repro")
    elif entry.get("candidates", 0) == 0:
        why = "not retrained: no candidates"
    else:
        why = "not retrained: no new labels"
    return f"{head}; {why}"
