"""Detector labels: importers round-trip, validation and its report, review decisions, selection
of self-training labels, held-out quality figures. No training here (see test_detect_train)."""

import json
import xml.etree.ElementTree as ET

import pytest

from spidergan import manifest, params
from spidergan.detect import labels as L
from spidergan.detect import quality, selftrain, train
from spidergan.params import DetectParams, SelftrainParams
from spidergan.review import decisions as dec

from detect_toy import make_raw


@pytest.fixture
def raw(tmp_path):
    return make_raw(tmp_path / "raw", count=6, seed=1)


def _truth(raw):
    return {i: [o["box"] for o in r["objects"]] for i, r in manifest.read_by_id(raw / "truth.jsonl").items()}


def _close(a, b, tol=0.6):
    return all(abs(x - y) <= tol for x, y in zip(a, b))


def _write_voc(folder, raw, truth):
    folder.mkdir()
    recs = manifest.read_by_id(raw / "manifest.jsonl")
    for iid, boxes in truth.items():
        ann = ET.Element("annotation")
        ET.SubElement(ann, "filename").text = f"{iid}.jpg"
        size = ET.SubElement(ann, "size")
        ET.SubElement(size, "width").text = str(recs[iid]["width"])
        ET.SubElement(size, "height").text = str(recs[iid]["height"])
        for b in boxes:
            o = ET.SubElement(ann, "object")
            ET.SubElement(o, "name").text = "Spider"
            bb = ET.SubElement(o, "bndbox")
            for k, v in zip(("xmin", "ymin", "xmax", "ymax"), b):
                ET.SubElement(bb, k).text = f"{v:.2f}"
        o = ET.SubElement(ann, "object")  # another class: skipped, not an error
        ET.SubElement(o, "name").text = "leaf"
        bb = ET.SubElement(o, "bndbox")
        for k, v in zip(("xmin", "ymin", "xmax", "ymax"), (1, 1, 5, 5)):
            ET.SubElement(bb, k).text = str(v)
        ET.ElementTree(ann).write(folder / f"{iid}.xml")


def _write_coco(path, raw, truth):
    recs = manifest.read_by_id(raw / "manifest.jsonl")
    images, anns = [], []
    for n, (iid, boxes) in enumerate(truth.items()):
        images.append({"id": n + 1, "file_name": f"task/{iid}.jpg", "width": recs[iid]["width"],
                       "height": recs[iid]["height"]})
        for b in boxes:
            anns.append({"id": len(anns) + 1, "image_id": n + 1, "category_id": 3,
                         "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]})
    path.write_text(json.dumps({"images": images, "annotations": anns,
                                "categories": [{"id": 3, "name": "spider"}]}))


def _write_labelstudio(path, raw, truth):
    recs = manifest.read_by_id(raw / "manifest.jsonl")
    tasks = []
    for n, (iid, boxes) in enumerate(truth.items()):
        w, h = recs[iid]["width"], recs[iid]["height"]
        result = [{"type": "rectanglelabels", "original_width": w, "original_height": h,
                   "value": {"x": b[0] / w * 100, "y": b[1] / h * 100, "width": (b[2] - b[0]) / w * 100,
                             "height": (b[3] - b[1]) / h * 100, "rectanglelabels": ["spider"]}}
                  for b in boxes]
        tasks.append({"id": n, "data": {"image": f"/data/upload/1/0a1b2c3d-{iid}.jpg"},
                      "annotations": [{"result": result}]})
    path.write_text(json.dumps(tasks))


@pytest.mark.parametrize("fmt", ["voc", "coco", "labelstudio"])
def test_importer_round_trip(fmt, raw, tmp_path):
    truth = _truth(raw)
    src = tmp_path / ("xml" if fmt == "voc" else f"{fmt}.json")
    {"voc": _write_voc, "coco": _write_coco, "labelstudio": _write_labelstudio}[fmt](src, raw, truth)
    out = tmp_path / "labels"
    report = L.import_labels(fmt, src, out=out, raw_dir=raw)
    assert report.rejected == []
    assert report.counts()["boxes"] == sum(map(len, truth.values()))
    if fmt == "voc":
        assert report.skipped_classes == {"leaf": len(truth)}
    got, rejects = L.read_folder(out, raw)
    assert rejects == []
    assert set(got) == set(truth)
    for iid, boxes in truth.items():
        assert len(got[iid]) == len(boxes)
        for a, b in zip(got[iid], boxes):
            assert _close(a, b), (a, b)


def test_import_rejects_are_reported(raw, tmp_path):
    recs = manifest.read_by_id(raw / "manifest.jsonl")
    iid = sorted(recs)[0]
    w, h = recs[iid]["width"], recs[iid]["height"]
    coco = {"images": [{"id": 1, "file_name": f"{iid}.jpg", "width": w, "height": h},
                       {"id": 2, "file_name": "not_there.jpg", "width": w, "height": h}],
            "categories": [{"id": 1, "name": "spider"}],
            "annotations": [
                {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 30, 30]},   # good
                {"id": 2, "image_id": 1, "category_id": 1, "bbox": [10, 10, 0, 20]},    # no area
                {"id": 3, "image_id": 1, "category_id": 1, "bbox": [w + 50, 5, 20, 20]},  # outside
                {"id": 4, "image_id": 1, "category_id": 1, "bbox": [-1, -1, 20, 20]},   # clipped
                {"id": 5, "image_id": 2, "category_id": 1, "bbox": [1, 1, 20, 20]},     # no image
            ]}
    src = tmp_path / "c.json"
    src.write_text(json.dumps(coco))
    report = L.import_labels("coco", src, out=tmp_path / "labels", raw_dir=raw)
    reasons = sorted(r["reason"] for r in report.rejected)
    assert reasons == ["empty_box", "image_missing", "outside_image"]
    assert report.clipped == 1 and report.written == {iid: 2}
    assert "rejected 3" in report.text()
    got, _ = L.read_folder(tmp_path / "labels", raw)
    assert got[iid][1][:2] == [0.0, 0.0]


def test_read_folder_rejects_bad_files(raw, tmp_path):
    recs = manifest.read_by_id(raw / "manifest.jsonl")
    a, b, c = sorted(recs)[:3]
    folder = tmp_path / "labels"
    folder.mkdir()
    (folder / f"{a}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (folder / f"{b}.txt").write_text("0 0.5 0.5 0.2\n")           # a field missing
    (folder / f"{c}.txt").write_text("")                            # a labelled negative
    (folder / "ghost.txt").write_text("0 0.5 0.5 0.2 0.2\n")       # its image does not exist
    (raw / recs[a]["file"]).rename(raw / "moved.jpg")                # image gone from disk
    got, rejects = L.read_folder(folder, raw)
    assert got == {c: []}
    assert sorted(r["reason"] for r in rejects) == ["bad_line", "image_missing", "image_missing"]


def test_empty_labels_folder_explains_how_to_label(raw, tmp_path):
    (tmp_path / "labels").mkdir()
    p = DetectParams()
    with pytest.raises(L.NoLabels) as e:
        train.gather_labels(p, "folder", 0, raw, tmp_path / "labels")
    msg = str(e.value)
    assert "import-labels --format voc" in msg and "legs included" in msg and "0 cx cy w h" in msg


def test_synthetic_labels_skip_distractors(raw):
    truth = manifest.read_by_id(raw / "truth.jsonl")
    iid = sorted(truth)[0]
    rec = truth[iid]
    rec["objects"].append({"cls": "caterpillar", "box": [1, 1, 9, 9], "label": 9})
    manifest.Appender(raw / "truth.jsonl").append(rec)  # the later record wins
    got = train.synthetic_labels(raw, count=6, seed=0)
    assert set(got) == set(truth)
    assert [1, 1, 9, 9] not in got[iid] and len(got[iid]) == len(rec["objects"]) - 1
    assert train.synthetic_labels(raw, count=3, seed=0) == train.synthetic_labels(raw, count=3, seed=0)


def test_split_is_seeded_and_disjoint():
    ids = [f"i{k}" for k in range(50)]
    tr, va = train.split(ids, 0.2, seed=3)
    assert len(va) == 10 and not set(tr) & set(va) and set(tr) | set(va) == set(ids)
    assert train.split(ids, 0.2, seed=3) == (tr, va) and train.split(ids, 0.2, seed=4) != (tr, va)


def test_decisions_in_the_review_apps_form(tmp_path):
    """key + orig_box (proposal) + box (dragged), and undo written as "clear"."""
    path = tmp_path / "decisions.jsonl"
    lines = [
        {"kind": "detection", "key": "a:0", "image_id": "a", "orig_box": [10, 10, 50, 50],
         "box": [8, 8, 56, 54], "decision": "accept", "ts": 1},
        {"kind": "detection", "key": "a:1", "image_id": "a", "orig_box": [60, 60, 90, 90],
         "box": [60, 60, 90, 90], "decision": "reject", "ts": 2},
        {"kind": "detection", "key": "a:1", "image_id": "a", "orig_box": [60, 60, 90, 90],
         "box": [60, 60, 90, 90], "decision": "clear", "ts": 3},
    ]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    d = dec.DetectionDecisions(dec.latest(path))
    cands = [_cand("a", [10.5, 10, 50, 50.5], 0.9), _cand("a", [60, 60, 90, 90], 0.8)]
    new, counts = selftrain.select(cands, d, SelftrainParams())
    assert new == {} and counts["undecided"] == 1                # a:1 was undone
    new, counts = selftrain.select(cands[:1], d, SelftrainParams())
    assert new == {"a": [[8.0, 8.0, 56.0, 54.0]]}                # the dragged box is the label


def _cand(iid, box, conf):
    return {"kind": "detection", "image_id": iid, "box": box, "conf": conf, "round": 1}


def test_select_requires_review_per_image():
    cands = [_cand("a", [0, 0, 10, 10], 0.9), _cand("a", [20, 20, 30, 30], 0.6),
             _cand("b", [0, 0, 10, 10], 0.95), _cand("c", [5, 5, 10, 10], 0.7)]
    decisions = dec.DetectionDecisions(dec.fold([
        {"image_id": "a", "box": [0, 0, 10, 10], "decision": "accept"},
        {"image_id": "a", "box": [20, 20, 30, 30], "decision": "reject"},
        {"image_id": "c", "box": [5, 5, 10, 10], "decision": "accept"}]))
    new, counts = selftrain.select(cands, decisions, SelftrainParams())
    assert new == {"a": [[0, 0, 10, 10]], "c": [[5, 5, 10, 10]]}   # b is undecided: it waits
    assert counts["accepted"] == 2 and counts["rejected"] == 1 and counts["undecided"] == 1
    assert counts["unreviewed_taken"] == 0


def test_select_without_review_uses_the_stricter_bar():
    sp = SelftrainParams(require_review=False, accept_conf=0.5, unreviewed_conf=0.85)
    cands = [_cand("a", [0, 0, 10, 10], 0.9), _cand("b", [0, 0, 10, 10], 0.9),
             _cand("b", [20, 20, 30, 30], 0.6)]
    new, counts = selftrain.select(cands, dec.DetectionDecisions({}), sp)
    assert new == {"a": [[0, 0, 10, 10]]}
    assert counts["unreviewed_taken"] == 1 and counts["ambiguous_images"] == 1


def test_unreviewed_conf_must_be_stricter():
    with pytest.raises(params.ParamsError, match="unreviewed_conf"):
        params.from_dict({"detect": {"selftrain": {"accept_conf": 0.6, "unreviewed_conf": 0.5}}})
    with pytest.raises(params.ParamsError, match="detect.imgsz"):
        params.from_dict({"detect": {"imgsz": 100}})


def test_quality_figures_and_failure_kinds(raw, tmp_path):
    spider, other = [100, 100, 200, 200], [300, 300, 340, 340]
    c = quality.classify([{"box": spider, "conf": 0.9}, {"box": [120, 120, 180, 180], "conf": 0.8},
                          {"box": [302, 301, 338, 341], "conf": 0.7}, {"box": [0, 0, 20, 20], "conf": 0.6},
                          {"box": [380, 0, 480, 90], "conf": 0.5}],
                         [spider, [400, 10, 450, 60]], [other])
    assert len(c["tp"]) == 1 and len(c["double"]) == 1 and len(c["distractor"]) == 1
    assert c["loose"] == [[380, 0, 480, 90]]
    assert len(c["false_box"]) == 1 and c["missed"] == [[400, 10, 450, 60]]
    gts = {"x": [spider], "y": [other]}
    assert quality.average_precision({"x": [(spider, 0.9)], "y": [(other, 0.8)]}, gts) == 1.0
    half = quality.average_precision({"x": [(spider, 0.9)], "y": []}, gts)
    assert half == pytest.approx(0.5)
    # the contact sheet draws failures of real raw images
    truth = manifest.read_by_id(raw / "truth.jsonl")
    dets = [{"id": i, "status": "ok", "boxes": []} for i in truth]
    figures, fails = quality.evaluate(dets, truth, list(truth))
    assert figures["missed"] == figures["spiders"] > 0 and figures["map50"] == 0.0
    assert quality.contact_sheet(raw, fails, tmp_path / "f.png") == len(truth)
    assert (tmp_path / "f.png").stat().st_size > 0


def test_spider_free_box_rate_counts_images_not_boxes():
    """Hand-computed: 4 spider-free images, two of them boxed (one twice): rate 2/4."""
    truth = {"a": {"objects": []}, "b": {"objects": [{"cls": "leaf", "box": [0, 0, 9, 9]}]},
             "c": {"objects": []}, "d": {"objects": []},
             "s": {"objects": [{"cls": "spider", "box": [10, 10, 50, 50]}]}}
    box = lambda c: {"box": [1, 1, 30, 30], "conf": c}   # noqa: E731
    dets = [{"id": "a", "status": "ok", "boxes": [box(0.9), box(0.4)]},
            {"id": "b", "status": "ok", "boxes": [box(0.3)]},
            {"id": "c", "status": "ok", "boxes": []}, {"id": "d", "status": "ok", "boxes": []},
            {"id": "s", "status": "ok", "boxes": [{"box": [10, 10, 50, 50], "conf": 0.9}]}]
    fig, _ = quality.evaluate(dets, truth, list(truth))
    assert (fig["spider_free_images"], fig["spider_free_boxed"], fig["spider_free_box_rate"]) == (4, 2, 0.5)
    assert fig["recall"] == 1.0
    # one-sided 95% Clopper-Pearson bound of 2 of 4 = the upper end of scipy's exact 90% interval
    from scipy.stats import binomtest

    assert fig["spider_free_box_rate_upper95"] == round(
        binomtest(2, 4).proportion_ci(confidence_level=0.90, method="exact").high, 4)


@pytest.mark.parametrize("k,n", [(0, 15), (1, 15), (7, 188), (3, 4)])
def test_upper_bound_is_clopper_pearson(k, n):
    """Against scipy's exact binomial interval (the one-sided 95% bound is the upper end of the
    two-sided 90% one) and, for k = 0, the closed form 1 - 0.05^(1/n)."""
    from scipy.stats import binomtest

    from spidergan.metrics import proportion

    expected = binomtest(k, n).proportion_ci(confidence_level=0.90, method="exact").high
    assert proportion.upper_bound(k, n) == pytest.approx(expected, rel=1e-9)
    if k == 0:
        assert proportion.upper_bound(k, n) == pytest.approx(1 - 0.05 ** (1 / n), rel=1e-9)
    assert proportion.upper_bound(n, n) == 1.0 and proportion.upper_bound(0, 0) == 1.0


def test_synthetic_source_labels_are_its_spiders(tmp_path):
    """Integration with the real synthetic source: labels are exactly the ground-truth spiders of
    `labeled` seeded images; distractors stay unlabelled."""
    from spidergan import scrape
    from spidergan.params import ScrapeParams, SyntheticParams

    raw = tmp_path / "raw"
    sp = ScrapeParams(synthetic=SyntheticParams(count=12, distractor_fraction=0.5))
    scrape.run(sp, seed=0, out=raw, metrics_path=None)
    truth = manifest.read_by_id(raw / "truth.jsonl")
    got = train.synthetic_labels(raw, count=8, seed=0)
    assert len(got) == 8 and set(got) <= set(truth)
    for iid, boxes in got.items():
        assert boxes == [o["box"] for o in truth[iid]["objects"] if o["cls"] == "spider"]
    out = tmp_path / "labels"
    recs = manifest.read_by_id(raw / "manifest.jsonl")
    for iid, boxes in got.items():
        L.write_label(out, iid, boxes, recs[iid]["width"], recs[iid]["height"])
    back, rejects = L.read_folder(out, raw)
    assert rejects == [] and all(len(back[i]) == len(got[i]) for i in got)


def test_nested_boxes_are_suppressed():
    from spidergan.detect.model import suppress_nested

    outer = {"box": [0, 0, 100, 100], "conf": 0.9}
    inner = {"box": [30, 30, 70, 70], "conf": 0.8}       # IoU 0.16: NMS keeps it
    other = {"box": [90, 90, 150, 150], "conf": 0.7}     # a neighbour overlapping a little
    assert suppress_nested([outer, inner, other], 0.8) == [outer, other]
    assert suppress_nested([outer, inner, other], 1.01) == [outer, inner, other]
