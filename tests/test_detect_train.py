"""train_detector and detect with real Ultralytics on a tiny drawn set (2 epochs at 64 px), under
the network guard: training, review-gated self-training, prediction, the per-image cache, bad
input, and the fast failure for weights that are not on disk."""

import json
import os
import shutil
import time
from dataclasses import replace

import numpy as np
import pytest

from spidergan import images, manifest
from spidergan.detect import model, predict, train
from spidergan.params import DetectParams, SelftrainParams

from detect_toy import make_raw

TINY = DetectParams(epochs=2, imgsz=64, batch=8, close_mosaic=1, labeled=10, val_fraction=0.2, min_labels=2, threads=0,
                    conf=0.001, max_det=5, predict_batch=4,
                    selftrain=SelftrainParams(rounds=1, accept_conf=0.001, unreviewed_conf=0.001,
                                              epochs=1))


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A trained tiny detector (round 0 only: nothing reviewed yet) and its outputs."""
    root = tmp_path_factory.mktemp("detproj")
    log = root / "netguard.log"
    old = os.environ.get("SPIDERGAN_NETGUARD_LOG")
    os.environ["SPIDERGAN_NETGUARD_LOG"] = str(log)
    raw = make_raw(root / "raw", count=16, seed=2, size=(128, 96))
    (root / "review").mkdir()
    decisions = root / "review" / "decisions.jsonl"
    decisions.write_text("")
    kw = dict(source="synthetic", seed=0, raw_dir=raw, labels_dir=root / "labels",
              decisions=decisions, out_model=root / "models/detector.pt", out_dir=root / "detector",
              metrics_path=root / "metrics/train_detector.json", work_dir=root / "work")
    t0 = time.time()
    report = train.run(TINY, **kw)
    report["_seconds"] = time.time() - t0
    yield root, raw, kw, report, log
    if old is None:
        os.environ.pop("SPIDERGAN_NETGUARD_LOG", None)
    else:
        os.environ["SPIDERGAN_NETGUARD_LOG"] = old


def _no_network(log):
    assert not log.exists() or log.read_text() == "", log.read_text()


def test_train_writes_model_labels_candidates_and_metrics(project):
    root, raw, kw, report, log = project
    assert (root / "models/detector.pt").stat().st_size > 10_000
    m = json.loads((root / "metrics/train_detector.json").read_text())
    for k in ("map50", "map50_95", "precision", "recall"):
        assert 0.0 <= m[k] <= 1.0 and k in m["round_0"]
    assert m["labels"] == {"images": 10, "boxes": m["labels"]["boxes"], "train": 8, "val": 2,
                           "rejected": 0, "negatives": m["labels"]["negatives"],
                           "train_negatives": m["labels"]["train_negatives"], "review_no_spider": 0,
                           "holdout": 0}
    assert report["labels"]["origin"] == "truth"  # words stay out of the metrics file
    labels = manifest.read(root / "detector/labels.jsonl")
    assert len(labels) == 10 and {r["split"] for r in labels} == {"train", "val"}
    assert all(r["origin"] == "truth" and r["round"] == 0 for r in labels)
    # nothing reviewed: candidates are proposed, none becomes a label, nothing is retrained
    cands = manifest.read(root / "detector/candidates.jsonl")
    labelled = {r["id"] for r in labels}
    assert cands and all(c["image_id"] not in labelled and c["kind"] == "detection" for c in cands)
    assert m["round_1"]["new_labels"] == 0 and m["round_1"]["undecided"] == len(cands)
    assert m["round_1"]["retrained"] is False
    # Ultralytics ran in the work folder, not in the working directory
    assert (root / "work/runs").is_dir() and not os.path.exists("runs")
    _no_network(log)


def test_torch_uses_the_configured_cores(project):
    """Ultralytics alone sets torch to cpu_count - 1 threads on CPU (1 of 2 cores)."""
    import torch

    from spidergan import env

    root, raw, kw, report, log = project
    assert torch.get_num_threads() == env.cpu_threads()  # threads: 0 trained on every core
    det = model.Detector(root / "models/detector.pt", replace(TINY, threads=1))
    det.predict([np.zeros((96, 128, 3), np.uint8)])
    assert torch.get_num_threads() == 1


def test_predict_ids_keeps_boxes_below_the_stage_threshold(project, tmp_path):
    from spidergan.detect import quality

    root, raw, kw, report, log = project
    ids = [r["id"] for r in manifest.read(raw / "manifest.jsonl")][:3]
    p = replace(TINY, conf=0.5)
    dets = quality.predict_ids(root / "models/detector.pt", p, raw, ids, conf=0.001)
    assert [d["id"] for d in dets] == ids and all(d["status"] == "ok" for d in dets)
    assert any(b["conf"] < 0.5 for d in dets for b in d["boxes"])  # 0.001, not the stage's 0.5
    # the stage's own Detector: the same boxes as the stage gives at that threshold
    stage = model.Detector(root / "models/detector.pt", replace(p, conf=0.001))
    rgb = np.asarray(images.load_rgb(raw / manifest.read(raw / "manifest.jsonl")[0]["file"]))
    assert dets[0]["boxes"] and stage.predict([rgb])[0] == dets[0]["boxes"]
    # an unreadable image is left out, not fatal
    bad = tmp_path / "raw"
    shutil.copytree(raw, bad)
    (bad / manifest.read(bad / "manifest.jsonl")[0]["file"]).write_bytes(b"not an image")
    assert [d["id"] for d in quality.predict_ids(root / "models/detector.pt", p, bad, ids)] == ids[1:]


def test_reviewed_candidates_become_labels_and_training_is_reused(project):
    root, raw, kw, report, log = project
    cands = manifest.read(root / "detector/candidates.jsonl")
    first, second = sorted({c["image_id"] for c in cands})[:2]
    with manifest.Appender(kw["decisions"]) as app:
        for c in cands:
            if c["image_id"] in (first, second):
                app.append({"kind": "detection", "image_id": c["image_id"], "box": c["box"],
                            "decision": "accept" if c["image_id"] == first else "reject", "ts": 1})
    n_first = sum(c["image_id"] == first for c in cands)
    t0 = time.time()
    m = train.run(TINY, **kw)
    assert m["round_0"]["reused"] is True          # the same first training is not redone
    r1 = m["round_1"]
    assert r1["new_label_images"] == 2 and r1["accepted"] == r1["new_labels"] == n_first
    assert r1["rejected"] == sum(c["image_id"] == second for c in cands)
    assert r1["retrained"] is True
    labels = manifest.read_by_id(root / "detector/labels.jsonl")
    assert labels[first]["origin"] == "review" and labels[first]["split"] == "train"
    assert len(labels[first]["boxes"]) == n_first
    assert labels[second]["boxes"] == []           # every proposal rejected: a negative example
    assert time.time() - t0 < report["_seconds"] + 30
    _no_network(log)


def test_unreviewed_self_training_is_counted(project, tmp_path):
    root, raw, kw, report, log = project
    p = replace(TINY, selftrain=replace(TINY.selftrain, require_review=False))
    kw = {**kw, "out_dir": tmp_path / "det", "out_model": tmp_path / "d.pt",
          "metrics_path": tmp_path / "m.json"}
    m = train.run(p, **kw)
    assert m["round_1"]["unreviewed_taken"] > 0 and m["round_1"]["retrained"] is True
    origins = {r["origin"] for r in manifest.read(tmp_path / "det/labels.jsonl")}
    assert origins == {"truth", "unreviewed"}
    _no_network(log)


def test_detect_cache_new_images_and_bad_input(project, tmp_path):
    root, raw, kw, report, log = project
    raw2 = tmp_path / "raw"
    shutil.copytree(raw, raw2)
    recs = manifest.read(raw2 / "manifest.jsonl")
    # a corrupt image and one whose file is gone: reported and skipped, not fatal
    (raw2 / recs[0]["file"]).write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    (raw2 / recs[1]["file"]).unlink()
    args = dict(raw_dir=raw2, model_path=root / "models/detector.pt", out=tmp_path / "det.jsonl",
                cache_dir=tmp_path / "cache", labels_path=root / "detector/labels.jsonl",
                metrics_path=tmp_path / "detect.json", failures_png=tmp_path / "failures.png")
    c = predict.run(TINY, **args)
    assert c["predicted"] == 15 and c["cached"] == 0
    assert c["errors_by_reason"] == {"corrupt": 1, "missing": 1}
    out = manifest.read(tmp_path / "det.jsonl")
    assert [r["id"] for r in out] == [r["id"] for r in recs]
    assert out[0]["status"] == "error" and out[1]["reason"] == "missing"
    w, h = recs[5]["width"], recs[5]["height"]
    for r in out[2:]:
        assert r["status"] == "ok"
        for b in r["boxes"]:
            x0, y0, x1, y1 = b["box"]
            assert -1 <= x0 < x1 <= w + 1 and -1 <= y0 < y1 <= h + 1 and b["cls"] == 0
            assert 0.001 <= b["conf"] <= 1
    labelled = set(manifest.read_by_id(root / "detector/labels.jsonl"))
    assert c["heldout"]["images"] == len([r for r in out[2:] if r["id"] not in labelled])
    assert (tmp_path / "failures.png").stat().st_size > 0

    # nothing new: everything from the cache, the model is not even loaded
    t0 = time.time()
    again = predict.run(TINY, **args)
    assert again["cached"] == 15 and again["predicted"] == 0 and time.time() - t0 < 5
    assert manifest.read(tmp_path / "det.jsonl") == out

    # one new raw image: only it runs
    make_raw(tmp_path / "more", count=1, seed=9, size=(128, 96))
    new = manifest.read(tmp_path / "more/manifest.jsonl")[0]
    new["id"] = "newone"
    shutil.copyfile(tmp_path / "more" / new["file"], raw2 / "images/newone.jpg")
    new["file"] = "images/newone.jpg"
    manifest.Appender(raw2 / "manifest.jsonl").append(new)
    third = predict.run(TINY, **args)
    assert third["predicted"] == 1 and third["cached"] == 15
    # other params: a different cache entry, so everything predicts again
    fourth = predict.run(replace(TINY, conf=0.5), **args)
    assert fourth["predicted"] == 16
    _no_network(log)


def test_missing_weights_fail_fast_with_how_to(tmp_path):
    t0 = time.time()
    with pytest.raises(model.DetectorError) as e:
        model.resolve_model("yolo11n.pt", root=tmp_path)
    assert "yolo11n.pt" in str(e.value) and "curl" in str(e.value) and "yolo11n.yaml" in str(e.value)
    with pytest.raises(model.DetectorError, match="neither"):
        model.resolve_model("nosuchmodel.yaml", root=tmp_path)
    assert time.time() - t0 < 10
    assert model.resolve_model("yolo11n.yaml", root=tmp_path) == "yolo11n.yaml"


def test_our_model_config_resolves_and_builds(tmp_path):
    """The committed detector config ships in the package; a project file of the same name wins."""
    from ultralytics import YOLO

    src = model.resolve_model("yolo11-tiny-p45.yaml", root=tmp_path)
    assert src == str(model.CONFIGS / "yolo11-tiny-p45.yaml")
    net = YOLO(src).model
    assert [int(s) for s in net.stride] == [16, 32]            # no P3/8 output
    assert sum(p.numel() for p in net.parameters()) < 1_000_000  # yolo11n has 2.6 M
    (tmp_path / "yolo11-tiny-p45.yaml").write_text((model.CONFIGS / "yolo11-tiny-p45.yaml").read_text())
    assert model.resolve_model("yolo11-tiny-p45.yaml", root=tmp_path) == str(tmp_path / "yolo11-tiny-p45.yaml")


def test_precision_picks_the_amp_argument():
    import torch

    assert train.amp_arg("fp32", cpu=True) is False
    assert train.amp_arg("fp32", cpu=False) is False
    assert train.amp_arg("auto", cpu=False) is True          # GPU: Ultralytics' own AMP check
    assert train.amp_arg("bf16", cpu=False) == "bf16"
    native = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert train.amp_arg("auto", cpu=True) == ("bf16" if native else False)
    assert train.amp_arg("bf16", cpu=True) == "bf16"


def test_cpu_bf16_autocast_is_what_the_trainer_uses():
    """Ultralytics' own helper raises for bf16 off CUDA; after amp_arg the trainer's helper
    gives a CPU bf16 autocast, and every other call still goes to the original."""
    import torch
    from ultralytics.engine import trainer as T

    train.amp_arg("bf16", cpu=True)
    wrapped = T.autocast
    train.amp_arg("bf16", cpu=True)
    assert T.autocast is wrapped                # wrapped once, not once per training
    with T.autocast(torch.bfloat16, device="cpu"):
        y = torch.nn.functional.linear(torch.randn(2, 4), torch.randn(3, 4))
    assert y.dtype == torch.bfloat16
    with T.autocast(False, device="cpu"):
        assert torch.nn.functional.linear(torch.randn(2, 4), torch.randn(3, 4)).dtype == torch.float32


def _human_labels(raw, folder, ids, empty=()):
    """Label files as a person (or an import) writes them: the ground truth of `ids`, and an
    empty file ("no spider") for each of `empty`."""
    from spidergan.detect import labels as L

    truth = manifest.read_by_id(raw / "truth.jsonl")
    recs = manifest.read_by_id(raw / "manifest.jsonl")
    for i in ids:
        boxes = [o["box"] for o in truth[i]["objects"] if o["cls"] == "spider"]
        L.write_label(folder, i, boxes, recs[i]["width"], recs[i]["height"])
    for i in empty:
        L.write_label(folder, i, [], recs[i]["width"], recs[i]["height"])


def test_too_few_labels_stop_with_the_count(project, tmp_path, capsys):
    root, raw, kw, report, log = project
    from spidergan.detect import labels as L

    ids = sorted(manifest.read_by_id(raw / "manifest.jsonl"))
    truth = manifest.read_by_id(raw / "truth.jsonl")
    spiders = [i for i in ids if any(o["cls"] == "spider" for o in truth[i]["objects"])][:4]
    _human_labels(raw, tmp_path / "labels", spiders, empty=[i for i in ids if i not in spiders][:2])
    (tmp_path / "labels" / "ghost.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    args = dict(kw, labels_dir=tmp_path / "labels", out_dir=tmp_path / "det",
                out_model=tmp_path / "m.pt", metrics_path=None)
    # 6 labelled, 1 held out (detect.holdout 0.2): 3 or 4 spiders left to train on, below 5
    with pytest.raises(L.NoLabels, match=r"only [34] labelled images with a spider.*1 more held out"
                                         r".*detect.min_labels is 5.*image_missing 1"):
        train.run(replace(TINY, min_labels=5, holdout=0.2, labels_from="folder"), **args)
    out = capsys.readouterr().out
    assert "6 labelled images" in out and "4 with a spider, 2 without" in out
    assert "image_missing 1" in out


def test_hand_labels_negatives_and_holdout_reach_training_and_quality(project, tmp_path, capsys):
    """Human labels: empty files and review "no spider" marks train as background images; a
    seeded holdout stays out of training and the detect stage measures on it."""
    root, raw, kw, report, log = project
    from spidergan.review import decisions as dec

    ids = sorted(manifest.read_by_id(raw / "manifest.jsonl"))
    _human_labels(raw, tmp_path / "labels", ids[:10], empty=ids[10:12])
    # a real source: the same photos without ground truth
    shutil.copytree(raw, tmp_path / "real", ignore=shutil.ignore_patterns("truth*"))
    raw = tmp_path / "real"
    decisions = tmp_path / "decisions.jsonl"
    dec.append(decisions, {"kind": "image", "key": ids[12], "decision": "no_spider"})
    p = replace(TINY, labels_from="folder", holdout=0.25,
                selftrain=replace(TINY.selftrain, rounds=1))
    args = dict(kw, source="folder", raw_dir=raw, labels_dir=tmp_path / "labels",
                decisions=decisions, out_dir=tmp_path / "det",
                out_model=tmp_path / "m.pt", metrics_path=tmp_path / "td.json")
    m = train.run(p, **args)
    out = capsys.readouterr().out
    assert "13 labelled images" in out and "1 marked no spider in review" in out
    assert "background images" in out and "self-training round 1" in out
    lab = manifest.read_by_id(tmp_path / "det/labels.jsonl")
    held = [i for i, r in lab.items() if r["split"] == "holdout"]
    assert len(held) == 3 == m["labels"]["holdout"] and lab[ids[12]]["origin"] == "review"
    assert held == train.holdout_ids({i: [] for i in lab}, 0.25, 0)   # seeded, reproducible
    assert m["labels"]["negatives"] == 3 and m["labels"]["train"] + m["labels"]["val"] == 10
    cands = manifest.read(tmp_path / "det/candidates.jsonl")
    assert not any(c["image_id"] in lab for c in cands)   # holdout and negatives proposed nothing
    c = predict.run(replace(p, conf=0.001), raw_dir=raw, model_path=tmp_path / "m.pt",
                    out=tmp_path / "dets.jsonl", cache_dir=tmp_path / "cache",
                    labels_path=tmp_path / "det/labels.jsonl", metrics_path=tmp_path / "d.json",
                    failures_png=tmp_path / "f.png")
    h = c["heldout"]
    assert h["images"] == 3 and h["spiders"] == sum(len(lab[i]["boxes"]) for i in held)
    assert h["spider_free_images"] == sum(1 for i in held if not lab[i]["boxes"])
    assert (tmp_path / "f.png").stat().st_size > 0
    _no_network(log)


def test_augment_is_ultralytics_test_time_augmentation(project):
    """detect.augment reaches Ultralytics' own augmented inference (the image, its mirror and two
    smaller scales, merged): the stage's Detector gives the boxes YOLO.predict(augment=True) gives,
    which differ from plain prediction; and the detect cache keeps the two apart."""
    import cv2

    root, raw, kw, report, log = project
    weights = root / "models/detector.pt"
    rgb = np.asarray(images.load_rgb(raw / manifest.read(raw / "manifest.jsonl")[0]["file"]))
    # every box (no nested suppression, max_det 100): a 2-epoch detector's top box alone can be
    # the same with and without augmentation
    base = replace(TINY, threads=1, max_det=100, nested_suppress=1.01)
    p_aug, p_plain = replace(base, augment=True), replace(base, augment=False)
    ours_aug = model.Detector(weights, p_aug).predict([rgb])[0]
    ours_plain = model.Detector(weights, p_plain).predict([rgb])[0]
    yolo = model.load_yolo(weights, 1)
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    for p, ours in ((p_aug, ours_aug), (p_plain, ours_plain)):
        res = yolo.predict([bgr], imgsz=p.imgsz, conf=p.conf, iou=p.iou, max_det=p.max_det,
                           augment=p.augment, device="cpu", verbose=False)[0]
        assert ours == model.suppress_nested(model.boxes_of(res), p.nested_suppress)
    assert ours_aug and ours_aug != ours_plain
    cache = root / "cache"
    assert predict.cache_file(cache, "0" * 64, p_aug) != predict.cache_file(cache, "0" * 64, p_plain)
