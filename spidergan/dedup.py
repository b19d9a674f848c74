"""The dedup stage: group near-duplicate crops by perceptual hash and keep one per group.

Crops within `threshold` bits of each other (on `hash`) are linked; linked crops form a group
(connected components, i.e. union-find over the pairs). Each group keeps the crop with the largest
effective side, then the highest confidence, then the smallest id.

Layout of `data/unique/`:
    manifest.jsonl   the kept crop records, each with "group" (the kept crop's id) and "group_size"
    groups.jsonl     one record per group of two or more: id, kept, members (kept first), size,
                     max_distance (largest distance of a member to the kept crop)
    hashes.npz       ids, packed hashes, hash kind and size of every crop that decoded
    rejects.jsonl    crops that could not be read: id, reason, detail

With ground truth (synthetic source: crops carry `truth_dup_group`), the reported pairs are scored
against the planted duplicates: a true pair is two crops of the same duplicate group and the
same ground-truth object. The sweep over thresholds goes to a CSV plot so users can pick theirs.
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from tqdm import tqdm

from spidergan import atomic, copies, hashing, manifest, outcome, sheets
from spidergan.params import DedupParams

log = logging.getLogger(__name__)


def groups_from_pairs(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Component label per node of the graph with edges (i, j) (union-find over the pairs)."""
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    g = coo_matrix((np.ones(len(i), dtype=np.int8), (i, j)), shape=(n, n))
    return connected_components(g, directed=False)[1]


def _rank_key(rec: dict):
    return (-int(rec.get("side") or 0), -float(rec.get("conf") or 0.0), str(rec["id"]))


def truth_key(rec: dict):
    """What makes two crops true duplicates: the planted group and the object in it."""
    g = rec.get("truth_dup_group")
    if g is None:
        return None
    return (str(g), rec.get("truth_label"))


def truth_pairs(records: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    by_key: dict = {}
    for k, r in enumerate(records):
        key = truth_key(r)
        if key is not None:
            by_key.setdefault(key, []).append(k)
    ii, jj = [], []
    for members in by_key.values():
        for a in range(len(members)):
            for b in range(a + 1, len(members)):
                ii.append(members[a])
                jj.append(members[b])
    return np.asarray(ii, dtype=np.int64), np.asarray(jj, dtype=np.int64)


def score_pairs(n: int, pi, pj, pd, ti, tj, t_dist, thresholds) -> list[dict]:
    """Precision and recall of the reported pairs (distance <= t) against the true pairs."""
    true_set = set((ti * n + tj).tolist())
    is_true = np.fromiter(((a * n + b) in true_set for a, b in zip(pi.tolist(), pj.tolist())),
                          dtype=bool, count=len(pi))
    rows = []
    for t in thresholds:
        rep = pd <= t
        reported = int(rep.sum())
        tp = int((rep & is_true).sum())
        rows.append({"threshold": int(t), "reported": reported, "true_positive": tp,
                     "precision": tp / reported if reported else 1.0,
                     "recall": int((t_dist <= t).sum()) / len(ti) if len(ti) else 1.0})
    return rows


FORMS = {"plain": copies.forms_for(mirror=False), "mirror": copies.forms_for(mirror=True),
         "dihedral": copies.forms_for(rotations=True)}


def _min_form(i, j, f, d):
    """One row per pair: the form with the smallest hash distance."""
    if not len(i):
        return i, j, f, d
    order = np.lexsort((f, d, j, i))
    first = order[np.unique(np.stack([i[order], j[order]], 1), axis=0, return_index=True)[1]]
    return i[first], j[first], f[first], d[first]


def _score_links(n: int, li, lj, ti, tj) -> dict:
    """Precision and recall of the linked pairs against the true pairs."""
    true_set = set((ti * n + tj).tolist())
    linked = set((li * n + lj).tolist())
    tp = len(true_set & linked)
    return {"reported": len(linked), "true_positive": tp,
            "precision": tp / len(linked) if linked else 1.0,
            "recall": tp / len(true_set) if true_set else 1.0}


def run(p: DedupParams, *, crops: str | Path, out: str | Path,
        metrics_path: str | Path | None = None, plots_dir: str | Path | None = None,
        workers: int | None = None) -> dict:
    """Deduplicate the crop manifest into `out`; returns (and writes) the metrics."""
    crops, out = Path(crops), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    records = list(manifest.read_by_id(crops / "manifest.jsonl").values())
    if not records:
        outcome.refuse_empty("dedup", f"no crops in {crops / 'manifest.jsonl'} (run the crop stage)")

    with tqdm(total=len(records), desc="dedup: hashing", unit="img") as bar:
        got = hashing.hash_files([crops / r["file"] for r in records], p.hash, p.hash_size,
                                 workers=workers, progress=bar.update, keep_smalls=True)
    rejects = [{"id": records[k]["id"], "reason": "unreadable", "detail": f"{reason}: {detail}"}
               for k, (path, reason, detail) in
               zip(sorted(set(range(len(records))) - set(got.index.tolist())), got.errors)]
    for r in rejects:
        log.warning("dedup: skipping crop %s (%s)", r["id"], r["detail"])
    recs = [records[k] for k in got.index.tolist()]
    n = len(recs)
    sig = copies.signatures_from_smalls(got.smalls, p.hash, p.hash_size, FORMS[p.forms])
    h = sig.hashes

    has_truth = any(r.get("truth_dup_group") is not None for r in recs)
    search_r = max(p.threshold, p.sweep_max) if has_truth else p.threshold
    # hash pairs in any form (the fast path), the nearest form per pair
    pi, pj, pf, pd = _min_form(*copies.candidates(sig, None, radius=search_r, workers=workers))
    # verified pairs: the shortlist's copy distance
    vi, vj, vf, vd, vc = copies.self_pairs(sig, p.shortlist_radius, p.shortlist, workers=workers)
    by_hash = pd <= p.threshold
    by_copy = vc <= p.copy_threshold
    li = np.concatenate([pi[by_hash], vi[by_copy]])
    lj = np.concatenate([pj[by_hash], vj[by_copy]])
    lf = np.concatenate([pf[by_hash], vf[by_copy]])
    if len(li):
        key, first = np.unique(li * max(n, 1) + lj, return_index=True)
        li, lj, lf = li[first], lj[first], lf[first]
    label = groups_from_pairs(n, li, lj)

    members: dict[int, list[int]] = {}
    for k in range(n):
        members.setdefault(int(label[k]), []).append(k)
    kept, groups = [], []
    for ks in members.values():
        ks.sort(key=lambda k: _rank_key(recs[k]))
        head = recs[ks[0]]
        kept.append(dict(head, group=head["id"], group_size=len(ks)))
        if len(ks) > 1:
            d = np.bitwise_count(h[ks] ^ h[ks[0]]).sum(axis=1)
            groups.append({"id": head["id"], "kept": head["id"], "size": len(ks),
                           "members": [recs[k]["id"] for k in ks], "max_distance": int(d.max())})
    order = {r["id"]: k for k, r in enumerate(recs)}
    kept.sort(key=lambda r: order[r["id"]])
    groups.sort(key=lambda g: (-g["size"], g["id"]))

    manifest.write(out / "manifest.jsonl", kept)
    manifest.write(out / "groups.jsonl", groups)
    manifest.write(out / "rejects.jsonl", rejects)
    with atomic.atomic_path(out / "hashes.npz", suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, ids=np.asarray([r["id"] for r in recs], dtype=str), hashes=h,
                     kind=p.hash, hash_size=p.hash_size)

    metrics = {"images_in": len(records), "unreadable": len(rejects), "hashed": n,
               "kept": len(kept), "removed": n - len(kept), "groups": len(groups),
               "largest_group": max((g["size"] for g in groups), default=1 if n else 0),
               "pairs": int(len(li)), "pairs_by_hash": int(by_hash.sum()),
               "pairs_by_copy": int(by_copy.sum()),
               "pairs_not_plain": int((lf > 0).sum()), "threshold": p.threshold,
               "copy_threshold": p.copy_threshold}
    sweep = []
    if has_truth:
        ti, tj = truth_pairs(recs)
        t_dist = (np.min([np.bitwise_count(sig.form_hashes[f][ti] ^ h[tj]).sum(axis=1)
                          for f in range(len(sig.forms))], axis=0) if len(ti)
                  else np.zeros(0, dtype=np.int64))
        sweep = score_pairs(n, pi, pj, pd, ti, tj, t_dist, range(p.sweep_max + 1))
        hash_at = score_pairs(n, pi, pj, pd, ti, tj, t_dist, [p.threshold])[0]
        at = _score_links(n, li, lj, ti, tj)
        same_group = label[ti] == label[tj] if len(ti) else np.zeros(0, bool)
        metrics.update({
            "truth_pairs": int(len(ti)), "reported_pairs": at["reported"],
            "false_pairs": at["reported"] - at["true_positive"],
            "precision": round(at["precision"], 6), "recall": round(at["recall"], 6),
            "false_pair_share": round(1 - at["precision"], 6),
            "group_recall": round(float(same_group.mean()) if len(ti) else 1.0, 6),
            "hash_only_recall": round(hash_at["recall"], 6),
            "hash_only_precision": round(hash_at["precision"], 6)})
    if metrics_path:
        atomic.write_metrics(metrics_path, metrics)
    if plots_dir:
        plots_dir = Path(plots_dir)
        _write_sweep(plots_dir / "pr_sweep.csv", sweep)
        sheet = _contact_sheet(groups[:p.sheet_groups], {r["id"]: r for r in recs}, crops, p.sheet_cell)
        atomic.save_image(plots_dir / "groups.png", sheet)
    if not kept:
        outcome.refuse_empty("dedup", f"no crop of {len(records)} could be read",
                             {"unreadable": len(rejects)})
    outcome.summary("dedup", f"{len(kept)} unique crops of {n} ({n - len(kept)} duplicates in "
                    f"{len(groups)} groups at threshold {p.threshold})", {"unreadable": len(rejects)})
    return metrics


def _write_sweep(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["threshold", "precision", "recall", "reported", "true_positive"],
                       lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (round(v, 6) if isinstance(v, float) else v) for k, v in r.items()})
    atomic.write_text(path, buf.getvalue())


def _contact_sheet(groups: list[dict], by_id: dict, crops: Path, cell: int, max_cols: int = 10):
    if not groups:
        return sheets.message("no duplicate groups at this threshold", cell * 4)
    rows, labels, titles = [], [], []
    for g in groups:
        ids = g["members"][:max_cols]
        rows.append([crops / by_id[i]["file"] for i in ids])
        labels.append([("kept " if i == g["kept"] else "") + f"{by_id[i]['side']}px" for i in ids])
        more = f" (+{g['size'] - len(ids)} more)" if g["size"] > len(ids) else ""
        titles.append(f"group {g['id']}: {g['size']} crops, max distance {g['max_distance']}{more}")
    return sheets.contact_sheet(rows, labels, titles, cell=cell)
