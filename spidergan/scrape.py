"""The scrape stage: bring images from a source into `data/raw/` with a manifest.

Layout of `data/raw/`:
    images/<id>.jpg|png   the validated image files
    manifest.jsonl        one record per accepted image: id, file, source, width, height, sha256,
                          provenance (source-specific: photo id, owner, licence, url, path, ...)
    rejects.jsonl         one record per input not taken: id, reason, detail
    ATTRIBUTION.csv       Flickr source: who to credit for each photo, under which licence
    truth.jsonl, truth/   ground truth (synthetic source only): objects with boxes, masks,
                          duplicate groups
Counts go to the metrics file given by the stage.

All sources share one ingest path (`spidergan.ingest.Ingest`: validation, atomic write, manifest
and rejects records, resume). An image already stored by an earlier run from the same source key
(Flickr: the same photo URL; folder: same path, size and mtime; synthetic: same bytes) is kept
without fetching it again.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image

from spidergan import atomic, images, manifest, outcome
from spidergan.ingest import Ingest, ScrapeError, sha256, write_attribution  # noqa: F401
from spidergan.params import ScrapeParams

log = logging.getLogger(__name__)


def run(p: ScrapeParams, seed: int, *, out: str | Path, metrics_path: str | Path | None) -> dict:
    """Run the configured source into `out`; returns (and writes) the counts."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if p.source == "synthetic":
        counts = _run_synthetic(p, seed, out)
    elif p.source == "flickr":
        from spidergan.sources import flickr

        counts = flickr.run(p, out)
    elif p.source == "folder":
        from spidergan.sources import folder

        counts = folder.run(p, out)
    else:  # pragma: no cover - params.py restricts the choices
        raise ValueError(f"unknown scrape.source {p.source!r}")
    if metrics_path:
        atomic.write_metrics(metrics_path, counts)
    reasons = counts.get("reasons", {})
    if not counts["images"]:
        hint = ""
        if reasons.get("too_small"):
            big = counts.get("largest_too_small")
            hint = f"scrape.min_side {p.min_side}" + (
                f"; largest image {big} px: set scrape.min_side to at most {big} to take them"
                if big else "")
        elif not counts["listed"]:
            hint = {"folder": f"scrape.folder.path {p.folder.path!r} holds no files",
                    "flickr": "the search or group returned no photos"}.get(p.source, "")
        outcome.refuse_empty("scrape", f"no images: all {counts['listed']} inputs left out",
                             reasons, hint)
    outcome.summary("scrape", f"{counts['images']} images in {out} ({counts['written']} new, "
                    f"{counts['skipped_existing']} kept from the last run)", reasons)
    return counts


# --------------------------------------------------------------------------- synthetic
def _run_synthetic(p: ScrapeParams, seed: int, out: Path) -> dict:
    from spidergan.sources import synthetic

    truth_dir = out / "truth"
    truth_dir.mkdir(parents=True, exist_ok=True)
    ing = Ingest(out, p, "synthetic")
    ing.bar.total = p.synthetic.count
    truth_records: dict[str, dict] = {}
    try:
        with manifest.Appender(out / "truth.jsonl") as truth:
            for item in synthetic.generate(p.synthetic, seed):
                if not ing.listed(item.id):
                    continue
                mask_rel = f"truth/{item.id}.png"
                t = {"id": item.id, "mask": mask_rel, "objects": item.objects_json(),
                     "dup_group": item.dup_group, "dup_of": item.dup_of}
                # same bytes as last time: the image (and its ground truth) is already there
                prev = ing.previous.get(item.id)
                if (prev and prev.get("source") == "synthetic"
                        and prev.get("sha256") == sha256(item.jpeg)
                        and (out / prev["file"]).is_file() and (out / mask_rel).is_file()
                        and min(prev["width"], prev["height"]) >= p.min_side):
                    truth_records[item.id] = t
                    ing.accept(item.id, None, {}, reused=True, record=prev)
                    continue
                try:
                    stored = ing.store(item.id, item.jpeg)
                except images.ImageRejected as e:
                    ing.reject(item.id, e.reason, e.detail)
                    continue
                atomic.save_image(out / mask_rel,
                                  Image.fromarray(np.asarray(item.mask, np.uint8), "L"))
                # truth first: a record in the manifest promises its ground truth exists
                truth.append(t)
                truth_records[item.id] = t
                ing.accept(item.id, stored,
                           {"generator": "spidergan.synthetic", "seed": seed, "index": item.index,
                            "licence": "CC0"})
    except BaseException:
        ing.close()
        raise
    counts = ing.finish()
    records = ing.records()
    manifest.write(out / "truth.jsonl", [truth_records[r["id"]] for r in records])
    keep = {truth_records[r["id"]]["mask"] for r in records}
    for f in sorted(truth_dir.iterdir()):
        if f.is_file() and f"truth/{f.name}" not in keep:
            f.unlink()
    write_attribution(out, records)
    return counts
