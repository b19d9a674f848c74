"""The scrape stage: bring images from a source into `data/raw/` with a manifest.

Layout of `data/raw/`:
    images/<id>.<ext>     the validated image files
    manifest.jsonl        one record per accepted image: id, file, source, width, height, sha256,
                          provenance (source-specific: photo id, owner, licence, url, path, ...)
    rejects.jsonl         one record per rejected input: id, reason, detail
    truth.jsonl, truth/   ground truth (synthetic source only): objects with boxes, masks,
                          duplicate groups
Counts go to the metrics file given by the stage.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from spidergan import atomic, manifest
from spidergan.params import ScrapeParams

log = logging.getLogger(__name__)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def run(p: ScrapeParams, seed: int, out: str | Path = "data/raw",
        metrics_path: str | Path | None = "metrics/scrape.json") -> dict:
    """Run the configured source into `out`; returns (and writes) the counts."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if p.source == "synthetic":
        counts = _run_synthetic(p, seed, out)
    else:  # pragma: no cover - the real sources are added by their own issue
        raise NotImplementedError(f"scrape.source={p.source!r} is not available yet")
    if metrics_path:
        atomic.write_json(metrics_path, counts)
    return counts


def _run_synthetic(p: ScrapeParams, seed: int, out: Path) -> dict:
    from spidergan.sources import synthetic

    images_dir = out / "images"
    truth_dir = out / "truth"
    images_dir.mkdir(exist_ok=True)
    truth_dir.mkdir(exist_ok=True)
    done = manifest.read_by_id(out / "manifest.jsonl")
    counts = {"listed": 0, "written": 0, "skipped_existing": 0, "rejected": 0}
    with manifest.Appender(out / "manifest.jsonl") as man, \
            manifest.Appender(out / "truth.jsonl") as truth, \
            manifest.Appender(out / "rejects.jsonl") as rejects:
        bar = tqdm(synthetic.generate(p.synthetic, seed), total=p.synthetic.count,
                   desc="scrape synthetic", unit="img")
        for item in bar:
            counts["listed"] += 1
            if item.id in done and (out / done[item.id]["file"]).exists():
                counts["skipped_existing"] += 1
                continue
            rel = f"images/{item.id}.jpg"
            w, h = item.size
            if min(w, h) < p.min_side:
                rejects.append({"id": item.id, "reason": "too_small",
                                "detail": f"{w}x{h} below min_side {p.min_side}"})
                counts["rejected"] += 1
                continue
            atomic.write_bytes(out / rel, item.jpeg)
            mask_rel = f"truth/{item.id}.png"
            atomic.save_image(out / mask_rel, Image.fromarray(np.asarray(item.mask, np.uint8), "L"))
            # truth first: a record in the manifest promises its ground truth exists
            truth.append({"id": item.id, "mask": mask_rel, "objects": item.objects_json(),
                          "dup_group": item.dup_group, "dup_of": item.dup_of})
            man.append({"id": item.id, "file": rel, "source": "synthetic", "width": w,
                        "height": h, "sha256": sha256(item.jpeg),
                        "provenance": {"generator": "spidergan.synthetic", "seed": seed,
                                       "index": item.index, "licence": "CC0"}})
            counts["written"] += 1
            bar.set_postfix(written=counts["written"], rejected=counts["rejected"])
    counts["images"] = counts["written"] + counts["skipped_existing"]
    return counts

