"""The evaluate stage: score G_ema of the trained GAN against the dataset it was trained on.

Inputs: `data/dataset/` (train.npy, manifest.jsonl, holdout/), `models/gan/checkpoint.pt`,
optionally `models/detector.pt`. Outputs:

* `metrics/evaluate.json`, flat keys (DVC metrics):
  - `fid`, `kid_mean`, `kid_std`, `mifid`, `precision`, `recall` (+ the `kid_subset_size` and
    `pr_k` actually used) in Inception-v3 pool features, when `evaluate.fid` allows and the
    weights are present (only looked for on disk: evaluate never downloads); otherwise
    `fid_warning` says why and how to get them;
  - `swd` (+ per pyramid level `swd<res>`), always;
  - `detector_rate` (fakes) and `detector_rate_real` (training images), or `detector_rate_warning`;
  - `memorization_rate` (fakes within `hash_threshold` of a training image, perceptual hash),
    `copy_ratio` and `authenticity` (see spidergan.metrics.copying) in `memorization_space`:
    Inception cosine distance when the features exist, hash Hamming distance otherwise;
  - `num_fakes`, `num_train`, `num_holdout`, `kimg`.
  No value is ever NaN: a metric that cannot be computed raises or is replaced by a `_warning`.
  The file holds numbers only; the words (`*_warning`, `memorization_space`) go to
  `reports/evaluate_notes.json` and the report.
* `data/eval/`: `fakes/<seed>.png`, `reals/<id>.png` (the training images that are some fake's
  nearest), `pairs.jsonl` (`{"fake", "real", "distance", ...}` per fake, closest first, paths
  relative to the project root; the review app reads it).
* `plots/evaluate/`: `samples.png`, `pairs.png` (closest fake/real pairs), `snapshots.png` and
  `snapshots.json` (metrics per training snapshot when `evaluate.snapshots`, else the final one).
* `reports/evaluate.html`: metrics table and the pictures inline, opens without network.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from spidergan import atomic, copies, hashing, images, manifest, report, sheets
from spidergan.gan import checkpoint as ckpt_mod
from spidergan.gan.dataset import ImageDataset
from spidergan.device import pick as pick_device
from spidergan.gan.checkpoint import CHECKPOINT_NAME
from spidergan.gan.generate import generate_images, load_generator, seeded_z, to_uint8
from spidergan.metrics import copying, detector_rate
from spidergan.metrics import fid as fidm
from spidergan.metrics import memorization
from spidergan.metrics.swd import sliced_wasserstein
from spidergan.params import DetectParams, EvaluateParams, to_dict

log = logging.getLogger(__name__)


class EvaluateError(RuntimeError):
    """Evaluation cannot run as configured; the message says what to change."""


# --------------------------------------------------------------------------- generator
@torch.no_grad()
def generate(G, seeds: Sequence[int], batch: int = 32) -> np.ndarray:
    """uint8 NHWC images for `seeds` (the training grids' latents), psi = 1, constant noise."""
    return to_uint8(generate_images(G, seeded_z(seeds, G.z_dim), psi=1.0, batch=batch,
                                    noise_mode="const"))


def snapshots(gan_dir: str | Path, final: dict) -> list[tuple[int, Path]]:
    """Checkpoints under `gan_dir` from the same run as `final` (same params, seed and data)
    as (images seen, path), oldest first. Checkpoints of other runs set aside there are left out."""
    found = []
    for path in sorted(Path(gan_dir).rglob("*.pt")):
        try:
            state = ckpt_mod.load(path)
        except (ValueError, RuntimeError, OSError) as e:
            log.warning("skipping %s: %s", path, e)
            continue
        same = (not ckpt_mod.differing_keys(state.get("params", {}), final.get("params", {}))
                and state.get("seed") == final.get("seed")
                and state.get("dataset_sha256") == final.get("dataset_sha256"))
        if "G_ema" in state and same:
            found.append((int(state.get("nimg", 0)), path))
    return sorted(found)


# --------------------------------------------------------------------------- reals
class _Pictures(Sequence):
    """uint8 NHWC array seen as a list of PIL images, made on access (for picture helpers)."""

    def __init__(self, arr: np.ndarray):
        self.arr = arr

    def __len__(self) -> int:
        return len(self.arr)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return Image.fromarray(np.asarray(self.arr[i]))


@dataclasses.dataclass
class Reals:
    train: np.ndarray                   # uint8 NHWC, as the generator was trained on
    train_ids: list[str]
    holdout: np.ndarray                 # uint8 NHWC, never shown to the generator
    holdout_ids: list[str]
    sha256: str                         # of train.npy: the key of the feature cache
    train_hashes: np.ndarray = None
    holdout_hashes: np.ndarray = None
    train_feats: np.ndarray | None = None
    holdout_feats: np.ndarray | None = None
    train_sig: "copies.Signatures" = None
    holdout_sig: "copies.Signatures" = None
    forms: tuple = ()

    @property
    def resolution(self) -> int:
        return int(self.train.shape[1])


def load_reals(dataset: str | Path) -> Reals:
    dataset = Path(dataset)
    ds = ImageDataset(dataset)
    train = np.array(ds.images)  # into memory: read many times, and torch wants it writable
    recs = sorted(manifest.read(dataset / "manifest.jsonl"), key=lambda r: r.get("index", 0))
    ids = [r["id"] for r in recs] if len(recs) == len(train) else [f"train{i:06d}" for i in range(len(train))]
    res = ds.resolution
    hold, hold_ids = [], []
    for r in manifest.read(dataset / "holdout" / "manifest.jsonl"):
        try:
            im = images.load_rgb(dataset / r["file"])
        except images.ImageRejected as e:
            log.warning("held-out image %s unusable: %s", r.get("file"), e)
            continue
        if im.size != (res, res):
            im = im.resize((res, res), Image.LANCZOS)
        hold.append(np.asarray(im, dtype=np.uint8))
        hold_ids.append(r["id"])
    holdout = np.stack(hold) if hold else np.zeros((0, res, res, 3), np.uint8)
    return Reals(train, ids, holdout, hold_ids, ds.fingerprint())


def _to_float(u8: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(u8)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


# --------------------------------------------------------------------------- scoring
@dataclasses.dataclass
class Scored:
    metrics: dict
    warnings: dict
    hash_index: np.ndarray      # per fake: nearest training image by hash
    hash_dist: np.ndarray
    feat_index: np.ndarray | None = None
    feat_dist: np.ndarray | None = None
    copy_form: list | None = None  # per fake: the form that matched (hash_* hold the copy engine's)
    threshold: float = 0.15


def score(fakes: np.ndarray, reals: Reals, p: EvaluateParams, seed: int,
          extractor: fidm.FeatureExtractor | None, detector=None, device: str | None = None,
          progress: bool = True, full: bool = True) -> Scored:
    """All metrics of one set of fakes. `full=False` (snapshots) leaves out MiFID, precision/
    recall and the detector."""
    m: dict = {"num_fakes": int(len(fakes)), "num_train": int(len(reals.train)),
               "num_holdout": int(len(reals.holdout))}
    warn: dict = {}

    # SWD: as many reals as fakes (seeded choice), sorted projections compared one to one
    n = min(len(fakes), len(reals.train))
    pick = np.sort(np.random.default_rng(seed).permutation(len(reals.train))[:n])
    swd = sliced_wasserstein(_to_float(reals.train[pick]), _to_float(fakes), seed=seed)
    m.update({k: float(v) for k, v in swd.items()})

    # memorization: the copy engine (spidergan.copies) in the forms training showed, always
    forms = reals.forms or copies.forms_for(mirror=True)
    fake_sig = copies.signatures_from_smalls(hashing.shrink_images(_Pictures(fakes), p.hash, p.hash_size),
                                             p.hash, p.hash_size, forms)
    match = copies.nearest(fake_sig, reals.train_sig)
    hold = (copies.nearest(reals.holdout_sig, reals.train_sig) if len(reals.holdout)
            else None)
    hold_copy_d = hold.distance if hold is not None else np.zeros(0)
    # a held-out real within the default copy threshold of a training image is a duplicate
    # across the split (dedup missed it), not what "not a copy" looks like: left out, counted
    leaked = hold_copy_d <= p.copy_threshold
    cal = copying.calibrate_threshold(hold_copy_d[~leaked], p.copy_false_rate, p.copy_threshold)
    m["memorization_holdout_copies"] = int(leaked.sum())
    if leaked.any():
        warn["memorization_holdout_warning"] = (
            f"{int(leaked.sum())} of {len(hold_copy_d)} held-out reals are copies of training "
            f"images (copy distance <= evaluate.copy_threshold {p.copy_threshold}): duplicates "
            f"across the split that dedup missed; the threshold is calibrated without them")
    m["memorization_rate"] = memorization.memorization_rate(match.distance, cal["threshold"])
    m["memorization_threshold"] = cal["threshold"]
    m["memorization_calibrated"] = cal["calibrated"]
    m["memorization_false_copy_rate"] = cal["false_copy_rate"]
    m["memorization_false_copy_rate_upper95"] = cal["false_copy_rate_upper"]
    m["memorization_rate_at_default"] = memorization.memorization_rate(match.distance, p.copy_threshold)
    m["memorization_rate_flipped"] = float(np.mean((match.distance <= cal["threshold"])
                                                   & (match.form > 0))) if len(fakes) else 0.0
    h_idx, h_dist = match.index, match.distance
    out = Scored(m, warn, h_idx, h_dist, copy_form=match.form_names(), threshold=cal["threshold"])
    warn["memorization_note"] = (
        f"memorization_rate: fakes within copy distance {cal['threshold']:.4f} of a training "
        f"image in any of the forms {', '.join(forms)} (spidergan.copies); "
        + (f"threshold calibrated on {cal['n']} held-out reals ({cal['false_copies']} of them "
           f"within it: false-copy rate {cal['false_copy_rate']:.3f}, 95% upper bound "
           f"{cal['false_copy_rate_upper']:.3f})" if cal["calibrated"] else
           "no held-out reals: the default evaluate.copy_threshold"))

    if extractor is not None:
        fake_feats = extractor.features(fakes, p.batch, "inception fakes", progress)
        inc, notes = fidm.inception_metrics(reals.train_feats, fake_feats,
                                            kid_subsets=p.kid_subsets,
                                            kid_subset_size=p.kid_subset_size,
                                            mifid_eps=p.mifid_eps, pr_k=p.pr_k, seed=seed)
        if not full:
            inc = {k: inc[k] for k in ("fid", "kid_mean", "kid_std", "kid_subset_size")}
        m.update(inc)
        if notes and full:
            warn["inception_note"] = "; ".join(notes)
        f_idx, f_dist = memorization.nearest_by_features(fake_feats, reals.train_feats)
        out.feat_index, out.feat_dist = f_idx, f_dist
        space = "inception_cosine"
        fake_d, fake_i = f_dist, f_idx
        hold_d = (memorization.nearest_by_features(reals.holdout_feats, reals.train_feats)[1]
                  if len(reals.holdout) else np.zeros(0))
        _, train_gap = copying.self_nearest_cosine(reals.train_feats)
        ct_x = (reals.train_feats, reals.holdout_feats, fake_feats)
    else:
        space = "copy_distance"
        fake_d, fake_i = match.distance, match.index
        hold_d = hold_copy_d
        _, train_gap = copies.self_nearest(reals.train_sig)
        ct_x = (copies.centre_vectors(reals.train_sig.thumbs),
                copies.centre_vectors(reals.holdout_sig.thumbs), copies.centre_vectors(fake_sig.thumbs))
    warn["memorization_space"] = space
    try:
        m["copy_ratio"] = copying.copy_ratio(fake_d, hold_d)
    except ValueError as e:
        warn["copy_ratio_warning"] = str(e)
    m["authenticity"] = copying.authenticity(fake_i, fake_d, train_gap)
    if len(hold_d):
        # cells: at most one per 4 held-out reals, so a cell's U test has reals to compare with
        try:
            ct = copying.data_copying_ct(*ct_x, hold_d, fake_d,
                                         cells=min(p.ct_cells, max(1, len(hold_d) // 4)),
                                         min_fakes=p.ct_min_fakes, seed=seed)
            m["ct"], m["ct_cells"] = ct["ct"], ct["cells_used"]
            warn["ct_note"] = (f"C_T (Meehan et al. 2020) in {space}: {ct['cells_used']} of "
                               f"{ct['cells']} k-means cells of the training set used, holding "
                               f"{ct['test_share_used']:.2f} of the held-out reals")
        except ValueError as e:
            warn["ct_warning"] = str(e)

    if full and detector is not None:
        kw = dict(imgsz=p.detector_imgsz, batch=p.batch, device=device)
        m["detector_rate"] = detector_rate.rate(detector, fakes, p.detector_conf, **kw)
        m["detector_rate_real"] = detector_rate.rate(detector, reals.train[pick], p.detector_conf, **kw)
    return out


def check_finite(metrics: dict) -> None:
    bad = [k for k, v in metrics.items()
           if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        raise EvaluateError(f"metrics {', '.join(bad)} are not finite ({', '.join(str(metrics[k]) for k in bad)}); "
                            f"refusing to write them")


# --------------------------------------------------------------------------- run
def run(p: EvaluateParams, seed: int, *, dataset: str | Path, gan: str | Path,
        detector: str | Path, out: str | Path, plots: str | Path,
        report_path: str | Path | None = None, metrics_path: str | Path | None = None,
        cache_dir: str | Path | None = "default", root: str | Path | None = None,
        extractor: fidm.FeatureExtractor | None | str = "params", progress: bool = True,
        notes_path: str | Path | None = None, detect: DetectParams | None = None) -> dict:
    """Evaluate the final checkpoint (and every snapshot when `p.snapshots`); returns the metrics
    and the notes in one dict. The metrics file gets the numbers only (`dvc metrics show` stays
    a readable table); words (the `*_warning`s, `memorization_space`) go to `notes_path` and the
    report, and are printed.

    `extractor`: "params" = the standard Inception as `p.fid` says; or a FeatureExtractor
    (tests: random weights); or None = no Inception metrics.
    `detect`: how the detect stage predicts, so detector_rate sees images as the stage does
    (None: DetectParams' defaults, for tests).
    """
    from spidergan import env

    root = Path(root) if root else Path.cwd()
    out, plots = Path(out), Path(plots)
    if p.threads:
        torch.set_num_threads(p.threads)
    device = pick_device(p.device)
    if cache_dir == "default":
        cache_dir = env.state_dir() / "eval_cache"

    ckpt_path = Path(gan) / CHECKPOINT_NAME
    if not ckpt_path.is_file():
        raise EvaluateError(f"{ckpt_path} is missing: run the train stage first (`dvc repro train`)")
    state = ckpt_mod.load(ckpt_path)
    G = load_generator(ckpt_path, device)
    reals = load_reals(dataset)
    if len(reals.train) < 2:
        raise EvaluateError(f"{dataset} holds {len(reals.train)} training image(s); evaluation "
                            f"needs at least 2 (raise dataset.size)")
    if G.img_resolution != reals.resolution:
        raise EvaluateError(f"generator draws {G.img_resolution}px images but {dataset} holds "
                            f"{reals.resolution}px ones: re-run the dataset and train stages")
    warnings: dict = {}

    # Inception features of the reals: once per dataset and extractor
    if isinstance(extractor, str):
        extractor, w = fidm.inception_for_mode(p.fid, device)
        if w:
            warnings["fid_warning"] = w
            log.warning(w)
    reals.train_hashes = hashing.hash_images(_Pictures(reals.train), p.hash, p.hash_size)
    reals.holdout_hashes = hashing.hash_images(_Pictures(reals.holdout), p.hash, p.hash_size)
    reals.forms = training_forms(state.get("params", {}))
    reals.train_sig = copies.signatures_from_smalls(
        hashing.shrink_images(_Pictures(reals.train), p.hash, p.hash_size), p.hash, p.hash_size, reals.forms)
    reals.holdout_sig = copies.signatures_from_smalls(
        hashing.shrink_images(_Pictures(reals.holdout), p.hash, p.hash_size), p.hash, p.hash_size, ("plain",))
    if extractor is not None:
        key = f"{reals.sha256[:16]}-{extractor.id}"
        reals.train_feats = fidm.cached(cache_dir, f"train-{key}", lambda: extractor.features(
            reals.train, p.batch, "inception reals", progress))
        hold_key = manifest_key(reals.holdout_ids)
        reals.holdout_feats = fidm.cached(cache_dir, f"holdout-{key}-{hold_key}",
                                          lambda: extractor.features(reals.holdout, p.batch,
                                                                     "inception held-out", progress))

    model = None
    try:
        model = detector_rate.load_detector(detector, detect or DetectParams())
    except detector_rate.DetectorMissing as e:
        warnings["detector_rate_warning"] = str(e)
        log.warning("%s", e)

    seeds = list(range(p.first_seed, p.first_seed + p.num_fakes))
    fakes = generate(G, seeds, p.batch)
    scored = score(fakes, reals, p, seed, extractor, model,
                   device=str(device) if device.type == "cuda" else None, progress=progress)
    metrics = {"kimg": round(int(state.get("nimg", 0)) / 1000, 3), **scored.metrics}
    warnings.update(scored.warnings)
    metrics.update(warnings)
    check_finite(metrics)

    # per-snapshot series
    series = [_series_row(metrics)]
    if p.snapshots:  # the final checkpoint is scored above; add the run's other snapshots
        for nimg, path in snapshots(gan, state):
            if nimg == int(state.get("nimg", 0)):  # checkpoint.pt, or its copy in snapshots/
                continue
            Gs = load_generator(path, device)
            s = score(generate(Gs, seeds, p.batch), reals, p, seed, extractor, None,
                      progress=progress, full=False)
            check_finite(s.metrics)
            series.append(_series_row({"kimg": round(nimg / 1000, 3), **s.metrics}))
        series.sort(key=lambda r: r["kimg"])
        if len(series) < 2:
            metrics["snapshots_warning"] = (
                f"{gan} holds no snapshot checkpoints of this run besides {CHECKPOINT_NAME} "
                f"(set train.keep_snapshots: true): only the final checkpoint is scored")
            warnings["snapshots_warning"] = metrics["snapshots_warning"]

    # files: fakes, nearest reals, pairs.jsonl, plots, report, metrics
    _write_eval_folder(out, root, fakes, seeds, reals, scored, p)
    _write_plots(plots, fakes, reals, scored, series, p)
    if report_path:
        pictures = [("Samples (seeds %d..)" % p.first_seed, plots / "samples.png"),
                    ("Closest pairs: generated (left), nearest training image (right), copy distance and "
                     "the form that matched (* = within the calibrated threshold)",
                     plots / "pairs.png"),
                    ("Metrics per training snapshot", plots / "snapshots.png")]
        report.write_html(report_path, "SpiderGAN evaluation", metrics, pictures,
                          params=to_dict(p), notes=warnings)
    notes = {k: v for k, v in metrics.items() if not isinstance(v, (int, float))}
    if metrics_path:
        atomic.write_metrics(metrics_path, metrics)
    if notes_path:
        atomic.write_json(notes_path, notes)
    for k, v in notes.items():  # (fid and detector_rate warnings were logged when they arose)
        if k.endswith("_warning") and k not in ("fid_warning", "detector_rate_warning"):
            print(f"evaluate: {k}: {v}", flush=True)
    return metrics


def training_forms(train: dict) -> tuple[str, ...]:
    """The forms the generator saw its training images in: x-flips with train.mirror, and the
    90-degree turns of ADA's blit group (augpipe with "b") when augmentation is on."""
    rotations = train.get("augment", "ada") != "none" and "b" in str(train.get("augpipe", "bgc"))
    return copies.forms_for(mirror=bool(train.get("mirror", True)), rotations=rotations)


def manifest_key(ids: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]


SERIES_KEYS = ("swd", "fid", "kid_mean", "memorization_rate", "copy_ratio", "authenticity", "ct")


def _series_row(metrics: dict) -> dict:
    return {"kimg": metrics["kimg"], **{k: metrics[k] for k in SERIES_KEYS if k in metrics}}


def _write_eval_folder(out: Path, root: Path, fakes, seeds, reals: Reals, scored: Scored,
                       p: EvaluateParams) -> None:
    def rel(path: Path) -> str:
        return os.path.relpath(path.resolve(), root.resolve())

    fake_paths = []
    for s, a in zip(seeds, fakes):
        f = out / "fakes" / f"{s:06d}.png"
        atomic.save_image(f, Image.fromarray(a))
        fake_paths.append(f)
    records = []
    written: dict[int, Path] = {}
    feat = scored.feat_dist is not None
    order = np.lexsort(((scored.feat_dist if feat else np.zeros(len(fakes))), scored.hash_dist))
    for k in order.tolist():
        j = int(scored.hash_index[k])
        if j not in written:
            written[j] = out / "reals" / f"{reals.train_ids[j]}.png"
            atomic.save_image(written[j], Image.fromarray(reals.train[j]))
        rec = {"fake": rel(fake_paths[k]), "real": rel(written[j]),
               "distance": float(scored.hash_dist[k]), "space": "copy_distance",
               "form": scored.copy_form[k] if scored.copy_form else "plain",
               "seed": int(seeds[k]), "real_id": reals.train_ids[j],
               "within_threshold": bool(scored.hash_dist[k] <= scored.threshold)}
        if feat:
            rec["feature_distance"] = float(scored.feat_dist[k])
            rec["feature_nearest_id"] = reals.train_ids[int(scored.feat_index[k])]
        records.append(rec)
    manifest.write(out / "pairs.jsonl", records)


def _write_plots(plots: Path, fakes, reals: Reals, scored: Scored, series: list[dict],
                 p: EvaluateParams) -> None:
    cell = max(64, reals.resolution)
    n = min(len(fakes), p.grid * p.grid)
    atomic.save_image(plots / "samples.png",
                      sheets.grid(_Pictures(fakes)[:n], cols=p.grid, cell=cell))
    nearest = memorization.Nearest(_Pictures(fakes), _Pictures(reals.train), scored.hash_index,
                                   scored.hash_dist, scored.threshold, form=scored.copy_form or [])
    memorization.save_pairs_picture(nearest, plots / "pairs.png", n=p.pairs, cell=cell)
    atomic.write_json(plots / "snapshots.json", series)
    _snapshot_picture(plots / "snapshots.png", series)


def _snapshot_picture(path: Path, series: list[dict]) -> None:
    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in SERIES_KEYS if any(k in r for r in series)]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 2.8), squeeze=False)
    for ax, k in zip(axes[0], keys):
        pts = [(r["kimg"], r[k]) for r in series if k in r]
        ax.plot([a for a, _ in pts], [b for _, b in pts], marker="o")
        ax.set_title(k)
        ax.set_xlabel("kimg")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic.atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)

