"""Typed parameters: `params.yaml` loaded once into frozen dataclasses and validated.

Every knob of the pipeline is a field here. Validation happens once, at load: an unknown key,
a wrong type or an out-of-range value raises `ParamsError` naming the dotted key, so a typo in
`dvc exp run -S train.aug_pob=0.5` stops the run instead of silently training with the default.

Each section is a frozen dataclass; ranges and choices are declared with `param(...)` so the
rule sits beside the default it constrains.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import yaml

from spidergan.schema import ParamsError, build, param, section, to_dict  # noqa: F401 (ParamsError, to_dict: params' own names for callers)


# --------------------------------------------------------------------------- scrape
@section
class SyntheticParams:
    count: int = param(200, ge=1, le=1_000_000, doc="images to draw")
    dup_fraction: float = param(0.1, ge=0.0, le=0.5, doc="share of images that get planted near-duplicates")
    two_spider_fraction: float = param(0.1, ge=0.0, le=1.0)
    small_fraction: float = param(0.08, ge=0.0, le=1.0, doc="images whose spider is too small to crop")
    distractor_fraction: float = param(0.12, ge=0.0, le=1.0, doc="images with a caterpillar or leaf")
    empty_fraction: float = param(0.15, ge=0.0, le=1.0,
                                  doc="spider-free photos (background, web or distractor only): "
                                      "negatives to learn and to measure false boxes on")
    web_fraction: float = param(0.3, ge=0.0, le=1.0)
    min_size: int = param(320, ge=64, le=4096, doc="shorter side range, pixels")
    max_size: int = param(640, ge=64, le=4096, doc="longer side range, pixels")
    jpeg_quality_min: int = param(70, ge=10, le=100)
    jpeg_quality_max: int = param(95, ge=10, le=100)

    def validate(self):
        if self.min_size > self.max_size:
            raise ParamsError(f"min_size ({self.min_size}) is larger than max_size ({self.max_size})")
        if self.jpeg_quality_min > self.jpeg_quality_max:
            raise ParamsError("jpeg_quality_min is larger than jpeg_quality_max")


@section
class FlickrParams:
    group: str = param("", doc="group id (e.g. 12345678@N00) or group URL; empty = search")
    text: str = param("")
    tags: str = param("", doc="comma-separated tags")
    tag_mode: str = param("any", choices=("any", "all"))
    bbox: str = param("", doc="min_lon,min_lat,max_lon,max_lat")
    min_taken_date: str = param("")
    max_taken_date: str = param("")
    licenses: tuple[int, ...] = param(default_factory=lambda: (1, 2, 3, 4, 5, 6, 7, 9, 10),
                            doc="Flickr licence ids accepted (CC, no known restrictions, CC0, PDM)")
    limit: int = param(1000, ge=1, doc="photos to fetch at most (after the licence filter)")
    max_side: int = param(1024, ge=64, le=16384, doc="largest size to download, longest side")
    per_page: int = param(500, ge=1, le=500)
    concurrency: int = param(8, ge=1, le=64, doc="downloads in flight at once")
    calls_per_hour: int = param(3600, ge=1, doc="client-side API rate limit")
    max_tries: int = param(5, ge=1, le=20, doc="tries per API call and per photo")
    timeout_s: float = param(30.0, gt=0, doc="per request (connect and each read)")
    backoff_s: float = param(1.0, ge=0.0, doc="first retry waits up to this, doubling per try")
    backoff_max_s: float = param(60.0, ge=0.0, doc="cap of one retry wait")

    def validate(self):
        if self.licenses and any(not 0 <= x <= 100 for x in self.licenses):
            raise ParamsError(f"licenses: Flickr licence ids are small integers, got {self.licenses}")
        if not self.licenses:
            raise ParamsError("licenses: empty; no photo could be taken")


@section
class FolderParams:
    path: str = param("", doc="folder of images, imported recursively")


@section
class ScrapeParams:
    source: str = param("synthetic", choices=("synthetic", "flickr", "folder"))
    min_side: int = param(256, ge=1, doc="images whose shorter side is below this are rejected")
    max_pixels: int = param(100_000_000, ge=1, doc="decompression-bomb guard")
    synthetic: SyntheticParams = param(default_factory=SyntheticParams)
    flickr: FlickrParams = param(default_factory=FlickrParams)
    folder: FolderParams = param(default_factory=FolderParams)

    def validate(self):
        f = self.flickr
        if self.source == "flickr" and not (f.group or f.text or f.tags or f.bbox):
            raise ParamsError("source=flickr needs flickr.group, or a search: flickr.text, "
                              "flickr.tags or flickr.bbox (Flickr refuses searches without one)")
        if self.source == "folder" and not self.folder.path:
            raise ParamsError("source=folder needs folder.path")


# --------------------------------------------------------------------------- crop
@section
class CropParams:
    boxes: str = param("detections", choices=("detections", "truth"),
                       doc="box source: data/detections.jsonl, or the synthetic ground truth")
    policy: str = param("best", choices=("best", "all"),
                        doc="best box per image, or every box above min_conf after NMS")
    min_conf: float = param(0.25, ge=0.0, le=1.0)
    nms_iou: float = param(0.5, gt=0.0, le=1.0, doc="policy=all: overlap above which the weaker box goes")
    margin: float = param(0.15, ge=0.0, le=2.0, doc="added on each side, as a share of the box's longer side")
    pad: str = param("constant", choices=("constant", "edge", "drop"),
                     doc="a spider larger than the photo's short side: fill with the border's mean "
                         "colour, repeat the edge pixels, or drop the crop (never mirrored)")
    min_side: int = param(96, ge=1, doc="drop crops whose square is smaller than this in source pixels")
    size: int = param(128, ge=8, le=4096, doc="side of the written crops, pixels")
    resample: str = param("lanczos", choices=("lanczos", "box"))
    truth_iou: float = param(0.5, gt=0.0, le=1.0, doc="IoU matching a box to a ground-truth object")


# --------------------------------------------------------------------------- dedup
@section
class DedupParams:
    hash: str = param("phash", choices=("ahash", "dhash", "phash", "whash"))
    hash_size: int = param(16, ge=2, le=64, doc="hash of hash_size**2 bits")
    threshold: int = param(64, ge=0, doc="crops within this Hamming distance are duplicates")
    forms: str = param("mirror", choices=("plain", "mirror", "dihedral"),
                       doc="forms a duplicate may take: plain, + x-flip, + 90-degree turns")
    copy_threshold: float = param(0.14, ge=0.0, le=2.0,
                                  doc="also duplicates: shortlisted pairs within this copy "
                                      "distance (1 - correlation, spidergan.copies)")
    shortlist: int = param(2, ge=0, le=64, doc="nearest crops per crop and form that are verified")
    shortlist_radius: int = param(96, ge=0, doc="and every pair within this Hamming distance")
    sweep_max: int = param(96, ge=0, doc="precision/recall sweep covers thresholds 0..sweep_max")
    sheet_groups: int = param(12, ge=0, doc="largest groups drawn on the contact sheet")
    sheet_cell: int = param(96, ge=16, le=512)

    def validate(self):
        if self.threshold > self.hash_size * self.hash_size:
            raise ParamsError(f"threshold ({self.threshold}) exceeds the hash's {self.hash_size ** 2} bits")


# --------------------------------------------------------------------------- evaluate
@section
class EvaluateParams:
    num_fakes: int = param(1000, ge=2, doc="images drawn from G_ema at seeds first_seed.., psi=1")
    first_seed: int = param(0, ge=0, doc="fakes use seeds first_seed .. first_seed+num_fakes-1")
    fid: str = param("auto", choices=("auto", "on", "off"),
                     doc="Inception metrics (fid, kid, mifid, precision, recall): auto = when the "
                         "weights are present or can be fetched, on = fail without them, off = skip")
    kid_subsets: int = param(100, ge=1)
    kid_subset_size: int = param(1000, ge=2, doc="reduced to the smaller image count when larger")
    mifid_eps: float = param(0.1, gt=0, le=1, doc="MiFID cosine-distance epsilon (Kaggle: 0.1)")
    pr_k: int = param(3, ge=1, doc="k of the k-NN manifolds for precision/recall (reduced "
                                   "to images-1 when larger)")
    detector_conf: float = param(0.25, ge=0, le=1, doc="a fake counts as a spider at this confidence")
    detector_imgsz: int = param(320, ge=32, le=2048, doc="fakes are upscaled to this for the detector")
    hash: str = param("phash", choices=("ahash", "dhash", "phash", "whash"))
    hash_size: int = param(16, ge=2, le=64)
    hash_threshold: int = param(64, ge=0, doc="a fake this close (Hamming) to a training image is a "
                                              "copy (dedup's duplicate threshold)")
    copy_threshold: float = param(0.14, ge=0.0, le=2.0,
                                  doc="copy distance (spidergan.copies) counted as a copy when "
                                      "the held-out reals cannot calibrate one")
    copy_false_rate: float = param(0.01, gt=0.0, lt=1.0,
                                   doc="calibration: the copy threshold lets at most this share "
                                       "of held-out reals count as copies")
    ct_cells: int = param(5, ge=1, le=1000, doc="Meehan et al.'s C_T: k-means cells of the "
                                                "training set (fewer when held-out reals are few)")
    ct_min_fakes: int = param(20, ge=1, doc="C_T: cells with fewer fakes are left out")
    pairs: int = param(16, ge=1, le=256, doc="closest fake/real pairs shown in pairs.png")
    grid: int = param(8, ge=1, le=32, doc="sample grid is grid x grid fakes")
    snapshots: bool = param(False, doc="also evaluate every training snapshot (metrics per kimg)")
    batch: int = param(32, ge=1, le=1024, doc="images per generator / Inception batch")
    device: str = param("auto", choices=("auto", "cpu", "cuda"))
    threads: int = param(0, ge=0, doc="torch CPU threads; 0 = all cores")

    def validate(self):
        if self.hash_threshold > self.hash_size * self.hash_size:
            raise ParamsError(f"hash_threshold ({self.hash_threshold}) exceeds the hash's "
                              f"{self.hash_size ** 2} bits")
        if self.hash == "whash" and self.hash_size & (self.hash_size - 1):
            raise ParamsError("hash whash needs a power-of-two hash_size")


# --------------------------------------------------------------------------- mask
@section
class GrabCutParams:
    iterations: int = param(4, ge=1, le=50,
                            doc="GrabCut rounds: fit a colour model to each side, then cut (the "
                                "first spider model lacks the mixed colours of leg edges; each "
                                "round grows the legs by them)")
    cut: str = param("own", choices=("own", "opencv"),
                     doc="the graph cut of each round: our own (scipy max-flow; takes smoothness, "
                         "centre_prior and the shadow model) or OpenCV's grabCut (smoothness fixed "
                         "at 50, no prior: fills leg gaps, cuts thin legs; the shadow model then "
                         "only enters refine)")
    smoothness: float = param(5.0, ge=0.0, le=100.0,
                              doc="weight (log-odds) of labelling two similar neighbours apart; "
                                  "OpenCV's grabCut fixes it at 50, which cuts thin legs")
    centre_prior: float = param(2.0, ge=0.0, le=20.0,
                                doc="log-odds for spider at the box centre, falling linearly with the "
                                    "distance from it; 0 = none (a tight box around a radially built "
                                    "animal is spider at its centre, background towards its sides)")
    centre_prior_radius: float = param(0.5, gt=0.0, le=2.0,
                                       doc="distance from the centre where that prior crosses zero "
                                           "(1 = the box's side midpoints; box-normalised, elliptic)")
    shadow: tuple[float, ...] = param(default_factory=lambda: (0.3, 0.6),
                                      doc="light left in a shadow: the border's colours darkened by "
                                          "these factors also count as background; () = none")
    shadow_penalty: float = param(1.0, ge=0.0, le=50.0,
                                  doc="log-likelihood handicap of that shadow model (a dark spider "
                                      "looks like deep shadow)")
    margin: float = param(0.12, ge=0.0, lt=0.5,
                          doc="border band (share of the crop side) seeded as sure background when "
                              "the crop record has no det_box; keep it below the crop margin")
    box_pad: float = param(0.03, ge=0.0, le=0.5,
                           doc="the det box, mapped into the crop, grows by this share of the side "
                               "before seeding: detector boxes tend to clip leg tips")
    work_size: int = param(256, ge=32, le=4096,
                           doc="GrabCut runs on the crop scaled to this side (its cost grows with "
                               "pixels; larger keeps thin legs); the mask is scaled back")
    colour: str = param("lab", choices=("lab", "rgb"),
                        doc="colour space of the colour models: CIELAB separates shading from hue, "
                            "which tells a spider from bark or leaves better than RGB")
    core: float = param(0.10, ge=0.0, le=0.5,
                        doc="radius (share of the seed box side) of the disc at the box centre "
                            "that trains the first spider colour model and seeds sure spider; 0 = none")
    core_share: float = param(0.7, gt=0.0, le=1.0,
                              doc="share of the core disc, least like the border, that trains the "
                                  "first spider colour model (a thin-bodied spider fills little of it)")
    seed_llr: float = param(2.0, ge=-50.0, le=50.0,
                            doc="log-likelihood ratio (spider vs border colour model) a pixel in the "
                                "box needs to start as probable spider, and a core pixel to be sure "
                                "spider; the rest of the box starts as probable background")
    refine: bool = param(True, doc="after the cut, drop pixels its colour models (or the border's, "
                                   "or the shadow model) call background and add thin "
                                   "spider-coloured structures (legs) touching the mask")
    rim: int = param(1, ge=0, le=10,
                     doc="pixels (at work size) of the cut's mask kept around what refine keeps: "
                         "edge pixels mix spider and background colours")
    thin_contrast: float = param(25.0, ge=0.0, le=255.0,
                                 doc="black-hat/top-hat response (grey levels) a pixel needs to be "
                                     "added back as a thin structure by refine")
    thin_size: float = param(0.05, gt=0.0, le=0.5,
                             doc="width (share of the box side) below which a structure counts as "
                                 "thin for refine (the hat filters' element size)")
    min_component: float = param(0.02, ge=0.0, le=1.0,
                                 doc="foreground blobs smaller than this share of the largest one are "
                                     "dropped (specks of background texture)")
    median: int = param(3, ge=0, le=15,
                        doc="median filter (pixels at work size, odd; 0 = none) on the binary mask: "
                            "smooths the ragged edge that per-pixel refine leaves")
    feather: float = param(1.0, ge=0.0, le=20.0,
                           doc="Gaussian sigma (pixels at output size) softening the alpha edge")

    def validate(self):
        if self.median and self.median % 2 == 0:
            raise ParamsError(f"median must be odd or 0, got {self.median}")
        if any(not 0.0 < k < 1.0 for k in self.shadow):
            raise ParamsError(f"shadow: light factors must lie in (0, 1), got {list(self.shadow)}")


@section
class MaskParams:
    method: str = param("grabcut", choices=("none", "rembg", "grabcut"),
                        doc="grabcut needs no weights (committed default: runs offline)")
    model: str = param("u2net", doc="rembg model name (u2net, u2netp, isnet-general-use, silueta, "
                                    "birefnet-general, ...); weights in $U2NET_HOME")
    model_path: str = param("", doc="local ONNX file (U^2-Net-like: 1x3x320x320 in, 1x1x320x320 "
                                    "first out) loaded through rembg's u2net_custom; overrides model")
    alpha_matting: bool = param(False, doc="refine rembg's mask with closed-form alpha matting (slow)")
    alpha_matting_foreground_threshold: int = param(240, ge=0, le=255)
    alpha_matting_background_threshold: int = param(10, ge=0, le=255)
    alpha_matting_erode_size: int = param(10, ge=0, le=100)
    post_process: bool = param(False, doc="rembg's morphological smoothing of the mask")
    threshold: float = param(0.5, gt=0.0, lt=1.0,
                             doc="alpha level counted as foreground for the area checks and IoU")
    background: str = param("white", choices=("white", "black", "gray", "blur", "noise"))
    blur_radius: float = param(12.0, gt=0.0, le=200.0, doc="Gaussian radius for background: blur")
    min_area: float = param(0.02, ge=0.0, le=1.0,
                            doc="crops whose mask covers less of the image are dropped (masker failed)")
    max_area: float = param(0.85, ge=0.0, le=1.0,
                            doc="crops whose mask covers more of the image are dropped (masker failed)")
    sheet_count: int = param(12, ge=0, le=256, doc="crops shown in the contact sheet plot")
    grabcut: GrabCutParams = param(default_factory=GrabCutParams)

    def validate(self):
        if self.min_area >= self.max_area:
            raise ParamsError(f"min_area ({self.min_area}) must be below max_area ({self.max_area})")
        if self.alpha_matting_background_threshold >= self.alpha_matting_foreground_threshold:
            raise ParamsError("alpha_matting_background_threshold must be below "
                              "alpha_matting_foreground_threshold")
        if self.method == "rembg" and not (self.model or self.model_path):
            raise ParamsError("method rembg needs model or model_path")
# --------------------------------------------------------------------------- dataset
@section
class DatasetParams:
    size: int = param(2000, ge=1, doc="training images to pick (seeded); more than exist = all")
    source: str = param("masked", choices=("masked", "unique"),
                        doc="masked composites (mask stage) or deduplicated crops (dedup stage)")
    holdout: int = param(16, ge=0, doc="real images kept out of training for evaluate's copy check")
    resample: str = param("lanczos", choices=("lanczos", "bicubic", "bilinear", "box"),
                          doc="filter used to resize to train.resolution")


# --------------------------------------------------------------------------- train
@section
class TrainParams:
    resolution: int = param(32, ge=16, le=1024, doc="power of two")
    seed: Optional[int] = param(None, ge=0, le=2**31 - 1,
                                doc="seed of the GAN training alone (init, batches, augmentation); "
                                    "null = the top-level seed. A sweep varies it to repeat a point "
                                    "without redrawing the data or retraining the detector")
    batch: int = param(16, ge=2, le=4096)
    kimg: float = param(4.0, gt=0, doc="training length in thousands of real images shown to D")
    snap_kimg: float = param(1.0, gt=0, doc="checkpoint + sample grid every this many kimg")
    channel_base: int = param(1024, ge=16, doc="feature maps at resolution r: min(base // r, max)")
    channel_max: int = param(64, ge=1)
    mapping_layers: int = param(2, ge=1, le=16)
    z_dim: int = param(64, ge=1)
    w_dim: int = param(64, ge=1)
    mbstd_group: int = param(4, ge=1, doc="minibatch std group size (paper256 config: 8)")
    conv_clamp: float = param(0.0, ge=0, doc="clamp conv outputs to +-this; 0 = off (NVIDIA: 256)")
    lr_g: float = param(0.0025, gt=0)
    lr_d: float = param(0.0025, gt=0)
    r1_gamma: float | str = param(1.0, doc="R1 weight, >= 0, or auto: 0.0002 * resolution^2 "
                                            "/ batch (the ADA paper's heuristic)")
    r1_interval: int = param(16, ge=1, doc="lazy R1: every this many steps")
    pl_weight: float = param(2.0, ge=0, doc="path-length regularisation weight; 0 = off")
    pl_interval: int = param(4, ge=1, doc="lazy path-length: every this many steps")
    pl_batch_shrink: int = param(2, ge=1)
    style_mixing: float = param(0.9, ge=0, le=1)
    ema_kimg: float = param(1.0, ge=0, doc="half-life of the G average in kimg; 0 = no EMA")
    ema_rampup: float = param(0.05, ge=0, doc="EMA half-life at most this * images seen; 0 = off")
    mirror: bool = param(True, doc="random x-flips of the training images")
    augment: str = param("ada", choices=("none", "fixed", "ada"))
    aug_prob: float = param(0.0, ge=0, le=1, doc="p for augment=fixed; initial p for ada")
    ada_target: float = param(0.6, gt=0, lt=1, doc="target of r_t = E[sign(D(real))]")
    ada_kimg: float | str = param(20.0, doc="p can go 0 -> 1 in this many kimg (> 0), or auto: "
                                             "500, 100 when transfer learning (ADA paper)")
    ada_interval: int = param(4, ge=1, doc="adjust p every this many steps")
    augpipe: str = param("bgc", doc="augmentation groups, see spidergan.gan.augment")
    augment_filter: str = param("auto", choices=("auto", "bilinear", "antialias"),
                                doc="geometric augmentation resampling (gan/warp.py); auto = "
                                    "antialias on CUDA, bilinear on CPU")
    resume_from: str = param("", doc="checkpoint to transfer-learn from (weights only); empty = none")
    freeze_d: int = param(0, ge=0, doc="freeze this many D layers from the input side (FreezeD)")
    on_mismatch: str = param("restart", choices=("error", "restart"),
                             doc="checkpoint in the output folder made with other params: stop "
                                 "naming them, or set it aside and start afresh (dvc exp sweeps)")
    keep_snapshots: bool = param(False, doc="also keep G_ema of every snapshot in "
                                             "<out>/snapshots/ (evaluate.snapshots scores them)")
    grid: int = param(6, ge=1, le=32, doc="sample grid is grid x grid images")
    device: str = param("auto", choices=("auto", "cpu", "cuda"))
    threads: int = param(0, ge=0, doc="torch CPU threads; 0 = all cores")
    precision: str = param("auto", choices=("auto", "fp32", "bf16"),
                           doc="bf16 autocast for G and D main passes (demodulation, minibatch "
                               "std, losses, R1 and path length stay fp32); auto = bf16 on "
                               "CUDA cards that support it, fp32 otherwise")
    compile: bool = param(False, doc="torch.compile G and D for the main losses (CUDA)")
    tf32: bool = param(True, doc="TF32 matmuls and convolutions on Ampere+ GPUs")
    channels_last: bool = param(False, doc="D and the real images in channels-last layout")
    gpu_data_mib: int = param(4096, ge=0, doc="keep the packed dataset in GPU memory when it "
                                              "is at most this big (else pinned host memory)")

    def validate(self):
        if self.resolution & (self.resolution - 1):
            raise ParamsError(f"resolution: {self.resolution} is not a power of two")
        if self.snap_kimg > self.kimg:
            raise ParamsError(f"snap_kimg ({self.snap_kimg}) is larger than kimg ({self.kimg})")
        if self.channel_base // self.resolution < 1:
            raise ParamsError("channel_base // resolution must be at least 1")
        for key, bad in (("r1_gamma", lambda v: v < 0), ("ada_kimg", lambda v: v <= 0)):
            v = getattr(self, key)
            if isinstance(v, str) and v != "auto":
                raise ParamsError(f"{key}: {v!r} is neither a number nor 'auto'")
            if not isinstance(v, str) and bad(v):
                raise ParamsError(f"{key}: {v!r} is out of range")


# --------------------------------------------------------------------------- detect
@section
class SelftrainParams:
    rounds: int = param(1, ge=0, le=20, doc="self-training rounds after the first training")
    accept_conf: float = param(0.5, gt=0.0, lt=1.0,
                               doc="predictions on unlabelled images at least this confident become candidates")
    require_review: bool = param(True, doc="a candidate becomes a label only when a review decision accepts it")
    unreviewed_conf: float = param(0.85, gt=0.0, lt=1.0,
                                   doc="without review: the stricter confidence a candidate needs to be taken")
    epochs: int = param(10, ge=1, le=10_000, doc="epochs of each retraining (fine-tunes the previous round)")

    def validate(self):
        if self.unreviewed_conf < self.accept_conf:
            raise ParamsError(f"unreviewed_conf ({self.unreviewed_conf}) must be at least "
                              f"accept_conf ({self.accept_conf}): unreviewed labels need the stricter bar")


@section
class DetectParams:
    model: str = param("yolo11-tiny-p45.yaml",
                       doc="model YAML (trains from scratch, offline) or a local .pt file to fine-tune")
    labels_from: str = param("auto", choices=("auto", "truth", "folder"),
                             doc="auto: ground truth for the synthetic source, else data/labels/")
    labeled: int = param(130, ge=2, doc="synthetic source: images whose ground truth stands in for hand labels")
    min_labels: int = param(20, ge=1, doc="fewest labelled images with a spider to train on; fewer stops the "
                                          "stage (a detector from a handful of boxes finds spiders in anything)")
    holdout: float = param(0.2, ge=0.0, lt=1.0,
                           doc="hand labels (not synthetic): seeded share kept out of training, on which "
                               "the detect stage measures precision, recall, mAP50 and false boxes")
    val_fraction: float = param(0.2, gt=0.0, lt=1.0, doc="share of the labelled images held out for validation")
    epochs: int = param(300, ge=1, le=10_000)
    imgsz: int = param(256, ge=32, le=4096)
    batch: int = param(8, ge=1, le=1024)
    optimizer: str = param("AdamW", choices=("AdamW", "SGD", "auto"),
                           doc="auto: Ultralytics picks by the number of iterations")
    lr0: float = param(0.002, gt=0.0, le=1.0, doc="initial learning rate (ignored with optimizer auto)")
    warmup_epochs: float = param(1.0, ge=0.0, le=100.0)
    mosaic: float = param(1.0, ge=0.0, le=1.0, doc="mosaic augmentation probability")
    close_mosaic: int = param(10, ge=0, doc="last epochs trained without mosaic")
    flipud: float = param(0.5, ge=0.0, le=1.0, doc="vertical flip probability (spiders have no up)")
    device: str = param("auto", doc="auto (first GPU if any, else cpu), cpu, or a CUDA index such as 0")
    threads: int = param(1, ge=0, le=1024, doc="torch threads on CPU (training, predicting); 0: every core")
    precision: str = param("auto", choices=("auto", "fp32", "bf16"),
                           doc="training precision; auto: bf16 on a CPU with native bf16 (AVX512-BF16, "
                               "AMX), else fp32; on a GPU auto is Ultralytics' own AMP")
    conf: float = param(0.45, gt=0.0, lt=1.0, doc="detections below this confidence are dropped")
    augment: bool = param(True, doc="test-time augmentation when predicting (Ultralytics augment: "
                                    "the image, its mirror and two smaller scales, merged): ~3x the "
                                    "predict time, fewer false boxes at the same recall")
    iou: float = param(0.6, gt=0.0, lt=1.0, doc="NMS IoU threshold")
    max_det: int = param(20, ge=1, le=1000, doc="most boxes kept per image")
    nested_suppress: float = param(0.8, gt=0.0, le=1.01,
                                   doc="drop a box this much inside/around a more confident one; >1 off")
    predict_batch: int = param(16, ge=1, le=1024, doc="images decoded and predicted per batch")
    selftrain: SelftrainParams = param(default_factory=SelftrainParams)

    def validate(self):
        if self.imgsz % 32:
            raise ParamsError(f"imgsz ({self.imgsz}) must be a multiple of 32 (the detector's stride)")
        if self.close_mosaic > self.epochs:
            raise ParamsError(f"close_mosaic ({self.close_mosaic}) is larger than epochs ({self.epochs})")


# --------------------------------------------------------------------------- top level
@section
class Params:
    seed: int = param(0, ge=0, le=2**31 - 1)
    scrape: ScrapeParams = param(default_factory=ScrapeParams)
    detect: DetectParams = param(default_factory=DetectParams)
    crop: CropParams = param(default_factory=CropParams)
    dedup: DedupParams = param(default_factory=DedupParams)
    mask: MaskParams = param(default_factory=MaskParams)
    dataset: DatasetParams = param(default_factory=DatasetParams)
    train: TrainParams = param(default_factory=TrainParams)
    evaluate: EvaluateParams = param(default_factory=EvaluateParams)


def from_dict(data: Optional[dict]) -> Params:
    """Build and validate `Params` from a plain mapping (as parsed from YAML)."""
    return build(Params, data or {}, "")


def load(path: str | Path = "params.yaml") -> Params:
    """Load and validate the params file. Raises ParamsError with the dotted key on any problem."""
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"params file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ParamsError(f"{path}: not valid YAML: {e}") from None
    if data is not None and not isinstance(data, dict):
        raise ParamsError(f"{path}: top level must be a mapping of sections")
    return from_dict(data)


def override(p: Params, assignments) -> Params:
    """`p` with `section.key=value` assignments applied (values typed as YAML reads them: 5, 0.3,
    [0.3, 0.6], opencv), validated like params.yaml: an unknown key or a bad value is named."""
    data = to_dict(p)
    for text in assignments:
        key, eq, value = str(text).partition("=")
        if not eq or not key:
            raise ParamsError(f"override {text!r}: expected section.key=value")
        *path, last = key.split(".")
        node = data
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
            if not isinstance(node, dict):
                raise ParamsError(f"override {key}: {part} is not a section")
        node[last] = yaml.safe_load(value)
    return from_dict(data)


def train_seed(train: TrainParams, seed: int) -> int:
    """The seed the GAN trains with: `train.seed`, or the top-level `seed` when it is null."""
    return seed if train.seed is None else train.seed
