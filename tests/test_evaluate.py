"""Evaluate: Inception plumbing (random weights), FID against scipy, precision/recall, copy
measures, bad input, and the stage on a tiny dataset + generator the tests make themselves."""

import hashlib
import io
import json
import math
import re
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import scipy.linalg
import torch
from PIL import Image

from spidergan import manifest, params
from spidergan.metrics import copying
from spidergan.metrics import fid as fidm

RES = 32


# --------------------------------------------------------------------------- helpers
def _random_inception_state(seed=0) -> dict:
    """State dict of the FID Inception architecture with random (Kaiming) weights."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    buf = io.BytesIO()
    torch.save({}, buf)
    buf.seek(0)
    torch.manual_seed(seed)
    with mock.patch.object(FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd, **k: None):
        net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"],
                                          feature_extractor_weights_path=buf)
    for m in net.modules():  # default init shrinks activations to ~1e-8 through the depth
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    return net.state_dict()


@pytest.fixture(scope="module")
def inception_state():
    return _random_inception_state()


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    home = tmp_path / "torch"
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home


def _small_extractor(state, layer="64") -> fidm.FeatureExtractor:
    """Inception with random weights, features taken at an early pool (64-d: fast, and small
    enough for scipy's sqrtm)."""
    from torchmetrics.image.fid import NoTrainInceptionV3

    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    net = NoTrainInceptionV3(name="inception-v3-compat", features_list=[layer],
                             feature_extractor_weights_path=buf)
    return fidm.FeatureExtractor(net, f"random-{layer}")


def _images(n, seed, shift=0.0):
    """Blobs on a gradient: structured, distinct images."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:RES, 0:RES] / RES
    out = []
    for _ in range(n):
        cx, cy, r = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.1, 0.3)
        blob = ((xx - cx) ** 2 + (yy - cy) ** 2) < r * r
        base = np.stack([xx, yy, 1 - xx], -1) * rng.uniform(60, 200, 3) + shift
        base[blob] = rng.uniform(0, 255, 3)
        out.append(np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8))
    return np.stack(out) if out else np.zeros((0, RES, RES, 3), np.uint8)


def _fid_scipy(a, b):
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean.real))


# --------------------------------------------------------------------------- weights
def test_missing_weights_auto_warns_on_fails_off_skips(torch_home, netguard_log):
    path = torch_home / "hub" / "checkpoints" / fidm.WEIGHTS_NAME
    ext, warning = fidm.inception_for_mode("auto")
    assert ext is None
    assert str(path) in warning and "fetch-inception" in warning and fidm.WEIGHTS_URL in warning
    with pytest.raises(fidm.InceptionUnavailable, match=re.escape(str(path))):
        fidm.inception_for_mode("on")
    assert fidm.inception_for_mode("off") == (None, None)
    # the guard is on in tests: no download may even be attempted
    assert not netguard_log.exists() or netguard_log.read_text() == ""


def test_auto_never_touches_the_network_even_where_downloads_are_allowed(torch_home, monkeypatch):
    import socket

    tried = []
    monkeypatch.delenv("SPIDERGAN_NETGUARD", raising=False)
    monkeypatch.delenv("SPIDERGAN_OFFLINE", raising=False)
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: tried.append(a) or 1 / 0)
    assert fidm.fetch_allowed()
    ext, warning = fidm.inception_for_mode("auto")
    assert ext is None and "not downloaded at run time" in warning and tried == []


def test_standard_extractor_with_weights_file(torch_home, inception_state):
    """The real loading path (safe load, torchmetrics' NoTrainInceptionV3, 2048-d pool) with a
    weights file of the right shape."""
    path = torch_home / "hub" / "checkpoints" / fidm.WEIGHTS_NAME
    path.parent.mkdir(parents=True)
    torch.save(inception_state, path)
    ext, warning = fidm.inception_for_mode("on")
    assert warning is None and ext.id.startswith("inception2048-")
    f = ext.features(_images(2, 0), batch=2, progress=False)
    assert f.shape == (2, fidm.FEATURE_DIM) and np.isfinite(f).all() and f.std() > 0


def test_weights_file_with_code_is_refused(torch_home):
    path = torch_home / "hub" / "checkpoints" / fidm.WEIGHTS_NAME
    path.parent.mkdir(parents=True)
    torch.save({"x": Path("not a tensor")}, path)  # a pickled object: weights_only refuses it
    with pytest.raises(fidm.InceptionUnavailable, match="not a readable weights file"):
        fidm.inception_for_mode("on")


# --------------------------------------------------------------------------- metrics
@pytest.fixture(scope="module")
def feats(inception_state):
    ext = _small_extractor(inception_state)
    real = ext.features(_images(40, 1), batch=40, progress=False)
    fake = ext.features(_images(40, 2, shift=30), batch=40, progress=False)
    return real, fake


def test_fid_matches_scipy_on_same_features(feats):
    real, fake = feats
    ours, ref = fidm.fid(real, fake), _fid_scipy(real, fake)
    assert ref > 0
    assert abs(ours - ref) / ref < 1e-3, (ours, ref)
    assert fidm.fid(real, real) == pytest.approx(0.0, abs=1e-6 * ref)


def test_inception_metrics_keys_and_reduced_settings(feats):
    real, fake = feats
    m, notes = fidm.inception_metrics(real, fake, kid_subsets=10, kid_subset_size=1000, pr_k=3)
    for k in fidm.INCEPTION_KEYS:
        assert math.isfinite(m[k]), k
    assert m["kid_subset_size"] == 40 and any("kid_subset_size reduced" in n for n in notes)
    assert m["pr_k"] == 3
    # MiFID divides FID by the (clipped) memorization distance: never below FID
    assert m["mifid"] >= m["fid"]
    m2, notes2 = fidm.inception_metrics(real[:3], fake[:3], kid_subsets=5, pr_k=3)
    assert m2["pr_k"] == 2 and m2["kid_subset_size"] == 3 and len(notes2) == 2
    with pytest.raises(fidm.TooFewImages, match="at least 2"):
        fidm.inception_metrics(real[:1], fake, pr_k=3)


def test_precision_recall_geometry():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(50, 8))
    p, r, k = fidm.precision_recall(a, a.copy(), k=3)
    assert (p, r, k) == (1.0, 1.0, 3)
    p, r, _ = fidm.precision_recall(a, a + 100.0, k=3)
    assert (p, r) == (0.0, 0.0)
    # fakes collapsed on one real: precise, no recall
    p, r, _ = fidm.precision_recall(a, np.repeat(a[:1], 10, 0) + 1e-6, k=3)
    assert p == 1.0 and r < 0.2


def test_copy_ratio_and_authenticity():
    assert copying.copy_ratio([1, 1], [2, 2]) == 0.5
    with pytest.raises(ValueError, match="holdout"):
        copying.copy_ratio([1.0], [])
    with pytest.raises(ValueError, match="duplicates"):
        copying.copy_ratio([1.0], [0.0, 0.0])
    # training gaps 2 and 3; fake 0 sits at 0.5 of train 0 (copy), fake 1 at 4 of train 1
    assert copying.authenticity([0, 1], [0.5, 4.0], [2.0, 3.0]) == 0.5
    x = np.array([[1, 0], [0.9, 0.1], [0, 1.0]])
    idx, d = copying.self_nearest_cosine(x)
    assert idx.tolist() == [1, 0, 1] and d[0] == pytest.approx(d[1]) and d[0] < 0.01


def test_feature_cache(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return np.arange(6.0).reshape(2, 3)

    a = fidm.cached(tmp_path, "k", compute)
    b = fidm.cached(tmp_path, "k", compute)
    assert len(calls) == 1 and np.array_equal(a, b)


# --------------------------------------------------------------------------- the stage
def _project(tmp_path: Path, n_train=12, n_hold=4, kimgs=(1,)) -> Path:
    """data/dataset in the dataset stage's layout + a random tiny G checkpoint per kimg."""
    from spidergan import atomic
    from spidergan.gan import checkpoint as ckpt
    from spidergan.gan.train import build_networks

    root = tmp_path / "proj"
    ds = root / "data" / "dataset"
    ds.mkdir(parents=True)
    train = _images(n_train, 3)
    np.save(ds / "train.npy", train)
    manifest.write(ds / "manifest.jsonl", [{"id": f"t{i:03d}", "index": i} for i in range(n_train)])
    hold = []
    for i, a in enumerate(_images(n_hold, 4)):
        f = f"holdout/images/h{i:03d}.png"
        atomic.save_image(ds / f, Image.fromarray(a))
        hold.append({"id": f"h{i:03d}", "file": f})
    manifest.write(ds / "holdout" / "manifest.jsonl", hold)
    tp = params.from_dict({"train": {"resolution": RES, "z_dim": 16, "w_dim": 16, "mapping_layers": 1,
                                     "channel_base": 256, "channel_max": 32}}).train
    sha = hashlib.sha256((ds / "train.npy").read_bytes()).hexdigest()
    for j, kimg in enumerate(kimgs):
        torch.manual_seed(j)
        G, _ = build_networks(tp, torch.device("cpu"))
        name = "checkpoint.pt" if j == len(kimgs) - 1 else f"snapshots/kimg{kimg:06.1f}.pt"
        ckpt.save(root / "models" / "gan" / name,
                  {"params": params.to_dict(tp), "seed": 0, "dataset_sha256": sha,
                   "G_ema": G.state_dict(), "nimg": int(kimg * 1000)})
    # a checkpoint of another run set aside in the same folder: never one of this run's snapshots
    other = dict(params.to_dict(tp), lr_g=0.5)
    ckpt.save(root / "models" / "gan" / "old-run.pt", {"params": other, "seed": 0, "dataset_sha256": sha,
                                                      "G_ema": G.state_dict(), "nimg": 123})
    return root


def _params(**over):
    base = {"num_fakes": 10, "kid_subsets": 5, "grid": 3, "pairs": 4, "batch": 16, "threads": 1,
            "detector_imgsz": 64}
    return params.from_dict({"evaluate": {**base, **over}}).evaluate


def _run(root, p, **kw):
    from spidergan import evaluate

    kw.setdefault("extractor", None)
    return evaluate.run(p, seed=0, dataset=root / "data/dataset", gan=root / "models/gan",
                        detector=root / "models/detector.pt", out=root / "data/eval",
                        plots=root / "plots/evaluate", report_path=root / "reports/evaluate.html",
                        metrics_path=root / "metrics/evaluate.json", notes_path=root / "reports/evaluate_notes.json",
                        cache_dir=root / ".spidergan/eval_cache", root=root, progress=False, **kw)


class _Counting(fidm.FeatureExtractor):
    def __init__(self, inner):
        super().__init__(inner.net, inner.id)
        self.seen = 0

    def __call__(self, images):
        self.seen += len(images)
        return super().__call__(images)


def test_stage_with_inception_features(tmp_path, inception_state, netguard_log):
    root = _project(tmp_path)
    ext = _Counting(_small_extractor(inception_state))
    m = _run(root, _params(), extractor=ext)
    saved = json.loads((root / "metrics/evaluate.json").read_text())
    notes = json.loads((root / "reports/evaluate_notes.json").read_text())
    assert {**saved, **notes} == m and not set(saved) & set(notes)
    assert all(isinstance(v, (int, float)) for v in saved.values())
    for k in (*fidm.INCEPTION_KEYS, "swd", "memorization_rate", "copy_ratio", "authenticity",
              "kid_subset_size", "pr_k", "num_fakes", "num_train", "num_holdout", "kimg"):
        assert k in m, k
    assert all(math.isfinite(v) for v in m.values() if isinstance(v, float))
    assert m["num_fakes"] == 10 and m["num_train"] == 12 and m["num_holdout"] == 4
    assert m["memorization_space"] == "inception_cosine" and m["kid_subset_size"] == 10
    assert "models/detector.pt" in m["detector_rate_warning"] and "detector_rate" not in m
    assert 0 <= m["memorization_rate"] <= 1 and 0 <= m["authenticity"] <= 1 and m["copy_ratio"] > 0
    assert ext.seen == 12 + 4 + 10

    pairs = manifest.read(root / "data/eval/pairs.jsonl")
    assert len(pairs) == 10
    assert [r["distance"] for r in pairs] == sorted(r["distance"] for r in pairs)
    for r in pairs:
        assert not Path(r["fake"]).is_absolute() and (root / r["fake"]).is_file()
        assert (root / r["real"]).is_file() and r["real"].startswith("data/eval/reals/")
        assert "feature_distance" in r
    for f in ("samples.png", "pairs.png", "snapshots.png", "snapshots.json"):
        assert (root / "plots/evaluate" / f).stat().st_size > 0
    html = (root / "reports/evaluate.html").read_text()
    assert html.count("data:image/png;base64,") == 3
    assert not re.search(r"(src|href)=\"?(https?:)?//", html)  # nothing fetched from a network
    assert "fid" in html and "detector_rate_warning" in html

    # same dataset, same extractor: the reals come from the cache, only fakes go through
    ext.seen = 0
    m2 = _run(root, _params(num_fakes=12), extractor=ext)
    assert ext.seen == 12 and m2["num_fakes"] == 12
    assert not netguard_log.exists() or netguard_log.read_text() == ""


def test_stage_without_inception_and_snapshots(tmp_path, torch_home, netguard_log):
    root = _project(tmp_path, kimgs=(0.5, 1.0, 2.0))
    m = _run(root, _params(snapshots=True), extractor="params")  # fid: auto, weights absent
    assert fidm.WEIGHTS_NAME in m["fid_warning"]
    # words go to the notes file, the metrics file holds numbers only
    notes = json.loads((root / "reports/evaluate_notes.json").read_text())
    assert fidm.WEIGHTS_NAME in notes["fid_warning"] and notes["memorization_space"] == "copy_distance"
    saved = json.loads((root / "metrics/evaluate.json").read_text())
    assert "fid_warning" not in saved and all(isinstance(v, (int, float)) for v in saved.values())
    assert not any(k in m for k in fidm.INCEPTION_KEYS)
    assert m["memorization_space"] == "copy_distance"
    assert {"swd", "memorization_rate", "copy_ratio", "authenticity", "memorization_threshold",
            "memorization_false_copy_rate_upper95"} <= set(m)
    # the threshold comes from the held-out reals: none of them within it
    assert m["memorization_calibrated"] == 1 and m["memorization_false_copy_rate"] == 0.0
    series = json.loads((root / "plots/evaluate/snapshots.json").read_text())
    assert [r["kimg"] for r in series] == [0.5, 1.0, 2.0]
    assert series[-1]["swd"] == m["swd"] and len({r["swd"] for r in series}) == 3
    assert not netguard_log.exists() or netguard_log.read_text() == ""


def test_stage_detector_rate(tmp_path):
    """A real (randomly initialised) Ultralytics detector: at confidence ~0 it fires on every
    image, at confidence 1 on none."""
    from spidergan import env

    root = _project(tmp_path)
    env.configure_ultralytics()
    from ultralytics import YOLO

    torch.manual_seed(0)
    YOLO("yolov8n.yaml", task="detect").save(root / "models/detector.pt")
    lo = _run(root, _params(detector_conf=0.0))
    assert lo["detector_rate"] == 1.0 and lo["detector_rate_real"] == 1.0
    hi = _run(root, _params(detector_conf=1.0))
    assert hi["detector_rate"] == 0.0 and hi["detector_rate_real"] == 0.0
    assert "detector_rate_warning" not in hi


def test_detector_rate_predicts_as_the_detect_stage(tmp_path, monkeypatch):
    """detector_rate's Detector takes the detect section's predict settings (test-time
    augmentation, NMS IoU, max boxes), as the calls reaching Ultralytics' YOLO.predict show;
    conf and image size stay evaluate's own."""
    from spidergan import env

    root = _project(tmp_path)
    env.configure_ultralytics()
    from ultralytics import YOLO

    torch.manual_seed(0)
    YOLO("yolov8n.yaml", task="detect").save(root / "models/detector.pt")
    seen, predict = [], YOLO.predict

    def spy(self, *a, **kw):
        seen.append(kw)
        return predict(self, *a, **kw)

    monkeypatch.setattr(YOLO, "predict", spy)
    detect = params.from_dict({"detect": {"augment": False, "iou": 0.3, "max_det": 5}}).detect
    _run(root, _params(detector_conf=0.5, detector_imgsz=96), detect=detect)
    assert seen and all((k["augment"], k["iou"], k["max_det"], k["conf"], k["imgsz"]) == (False, 0.3, 5, 0.5, 96)
                        for k in seen)
    seen.clear()
    _run(root, _params(detector_conf=0.5))  # without a detect section: DetectParams' defaults
    d = params.DetectParams()
    assert seen and all((k["augment"], k["iou"], k["max_det"]) == (d.augment, d.iou, d.max_det) for k in seen)


def test_stage_bad_input(tmp_path, torch_home):
    from spidergan import evaluate

    root = _project(tmp_path, n_train=1, n_hold=0)
    with pytest.raises(evaluate.EvaluateError, match="at least 2"):
        _run(root, _params())
    root2 = _project(tmp_path / "b", n_hold=0)
    with pytest.raises(fidm.InceptionUnavailable, match=fidm.WEIGHTS_NAME):
        _run(root2, _params(fid="on"), extractor="params")
    m = _run(root2, _params(fid="off"), extractor="params")
    assert "fid_warning" not in m and "copy_ratio" not in m
    assert "dataset.holdout" in m["copy_ratio_warning"]
    with pytest.raises(params.ParamsError, match="evaluate.num_fakes"):
        _params(num_fakes=1)


def test_snapshots_from_the_real_trainer(tmp_path, torch_home):
    """train.keep_snapshots writes G_ema per snapshot; evaluate.snapshots scores each of them."""
    from gan_helpers import make_dataset, tiny
    from spidergan.gan import train

    ds = make_dataset(tmp_path, resolution=16, n=12, holdout=3)
    gan = tmp_path / "models" / "gan"
    train.run(tiny(keep_snapshots=True), seed=0, dataset=ds, out=gan, live_dir=None,
              metrics_path=None, progress=False)
    assert sorted(f.name for f in (gan / "snapshots").iterdir()) == [
        "kimg00000.000.pt", "kimg00000.016.pt", "kimg00000.032.pt"]
    from spidergan import evaluate

    m = evaluate.run(_params(snapshots=True, num_fakes=8), seed=0, dataset=ds, gan=gan,
                     detector=tmp_path / "none.pt", out=tmp_path / "eval",
                     plots=tmp_path / "plots", report_path=None, metrics_path=None,
                     cache_dir=None, root=tmp_path, extractor=None, progress=False)
    series = json.loads((tmp_path / "plots" / "snapshots.json").read_text())
    # kimg 0 (the untrained G), 0.016, and 0.032 (= checkpoint.pt and the last snapshot)
    assert [r["kimg"] for r in series] == [0.0, 0.016, 0.032] == [0.0, 0.016, m["kimg"]]
    assert series[-1]["swd"] == m["swd"]
    assert "snapshots_warning" not in m


def test_dvc_stage_tracks_every_evaluate_param():
    """dvc.yaml lists evaluate's params key by key (see the comment there): none may be missed."""
    import dataclasses

    import yaml

    root = Path(__file__).resolve().parents[1]
    stage = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]["evaluate"]
    listed = {k.split(".", 1)[1] for k in stage["params"] if k.startswith("evaluate.")}
    assert listed == {f.name for f in dataclasses.fields(params.EvaluateParams)}
