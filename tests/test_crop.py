"""Square extraction geometry and the crop stage on a tiny raw folder the test draws."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fake_raw import make_raw
from spidergan import crop, manifest, params
from spidergan.params import CropParams


def _ramp(w=40, h=30, mode="RGB"):
    a = (np.arange(h)[:, None] * 100 + np.arange(w)[None, :]) % 251
    a = a.astype(np.uint8)
    return Image.fromarray(np.dstack([a, a // 2, 255 - a]) if mode == "RGB" else a)


def test_extract_inside_equals_crop_then_resize():
    im = _ramp()
    got = crop.extract_square(im, (5, 3, 25, 23), 20)
    assert np.array_equal(np.asarray(got), np.asarray(im.crop((5, 3, 25, 23))))
    got = crop.extract_square(im, (5, 3, 25, 23), 64, resample="box")
    assert got.size == (64, 64)
    assert np.array_equal(np.asarray(got), np.asarray(im.crop((5, 3, 25, 23)).resize((64, 64), Image.BOX)))


def test_extract_pads_with_edge_or_constant_never_a_mirror():
    im = _ramp()
    a = np.asarray(im)
    got = np.asarray(crop.extract_square(im, (-4, -4, 16, 16), 20, pad="edge"))
    assert np.array_equal(got[4:, 4:], a[:16, :16])
    assert np.array_equal(got[4:, 3], a[:16, 0]) and np.array_equal(got[4:, 0], a[:16, 0])  # column 0 repeated
    assert np.array_equal(got[0, 4:], a[0, :16])      # row 0 repeated, not row 4 mirrored
    got = np.asarray(crop.extract_square(im, (30, 20, 50, 40), 20, pad="constant"))
    assert np.array_equal(got[:10, :10], a[20:30, 30:40]) and (got[10:] == 0).all() and (got[:, 10:] == 0).all()
    got = np.asarray(crop.extract_square(im, (30, 20, 50, 40), 20, pad="constant", fill=(1, 2, 3)))
    assert (got[15, 15] == [1, 2, 3]).all() and np.array_equal(got[:10, :10], a[20:30, 30:40])
    off = crop.extract_square(im, (100, 100, 110, 110), 8, pad="constant", fill=7)
    assert (np.asarray(off) == 7).all()
    for pad in ("reflect", "symmetric"):  # mirrors are gone for good
        with pytest.raises(ValueError, match="pad"):
            crop.extract_square(im, (-4, -4, 16, 16), 20, pad=pad)
    with pytest.raises(ValueError):
        crop.extract_square(im, (100, 100, 110, 110), 8, pad="edge")
    with pytest.raises(ValueError):
        crop.extract_square(im, (0, 0, 10, 12), 8)


def test_fit_square_shifts_inside_and_pads_only_a_spider_larger_than_the_photo():
    W, H = 300, 224
    inside, how = crop.fit_square([100, 60, 160, 120], 0.15, W, H)
    assert how == "inside" and inside == crop.square_around([100, 60, 160, 120], 0.15)
    # at the left edge: the square (side 60 * 1.3 = 78) moves right, keeps its side
    sq, how = crop.fit_square([0, 50, 60, 110], 0.15, W, H)
    assert how == "shifted" and sq == (0, 41, 78, 119)
    # a 200 px spider: the 260 px square would pass the 224 px short side; the margin gives way
    sq, how = crop.fit_square([40, 10, 240, 210], 0.15, W, H)
    assert how == "shifted" and sq[2] - sq[0] == 224 and sq[1] == 0 and sq[3] == 224
    assert sq[0] <= 40 and sq[2] >= 240 and 0 <= sq[0] and sq[2] <= W
    # a spider larger than the short side: the square covers the photo's height, as small as the box
    sq, how = crop.fit_square([10, 0, 290, 224], 0.15, W, H)
    assert how == "padded" and sq[2] - sq[0] == 280 and sq[1] < 0 < 224 < sq[3]
    assert 0 <= sq[0] and sq[2] <= W
    # invariant over random boxes: the box stays whole in the square, the square inside the photo
    # unless the box is larger than the short side
    rng = np.random.default_rng(0)
    for _ in range(500):
        w, h = (int(v) for v in rng.integers(50, 400, 2))
        x0, y0 = rng.uniform(0, w - 2), rng.uniform(0, h - 2)
        box = [x0, y0, rng.uniform(x0 + 1, w), rng.uniform(y0 + 1, h)]
        sq, how = crop.fit_square(box, float(rng.uniform(0, 0.5)), w, h)
        assert sq[2] - sq[0] == sq[3] - sq[1]
        assert sq[0] <= box[0] + 0.5 and sq[1] <= box[1] + 0.5
        assert sq[2] >= box[2] - 0.5 and sq[3] >= box[3] - 0.5
        big = max(box[2] - box[0], box[3] - box[1]) > min(w, h)
        assert (how == "padded") == (sq[0] < 0 or sq[1] < 0 or sq[2] > w or sq[3] > h)
        assert how != "padded" or big


def test_extract_label_map_keeps_labels():
    lab = np.zeros((50, 60), np.uint8)
    lab[10:30, 5:25] = 1
    lab[35:48, 40:58] = 2
    got = crop.extract_square(Image.fromarray(lab), (-10, -5, 50, 55), 37, pad="constant",
                              resample=Image.NEAREST)
    assert got.mode == "L" and got.size == (37, 37)
    assert set(np.unique(np.asarray(got))) == {0, 1, 2}
    same = crop.extract_square(Image.fromarray(lab), (0, 0, 50, 50), 50, resample="nearest")
    assert np.array_equal(np.asarray(same), lab[:50, :50])


def test_square_around_and_nms():
    assert crop.square_around([10, 20, 30, 60], 0.0) == (0, 20, 40, 60)
    assert crop.square_around([10, 20, 30, 60], 0.25) == (-10, 10, 50, 70)
    boxes = [[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]]
    assert crop.nms(boxes, [0.5, 0.9, 0.1], 0.5) == [1, 2]


def _params(**kw) -> CropParams:
    return params.from_dict({"crop": {"boxes": "truth", **kw}}).crop


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    return make_raw(tmp_path_factory.mktemp("raw"), n=18)


def test_crop_from_truth(raw, tmp_path):
    out = tmp_path / "crops"
    counts = crop.run(_params(min_side=64, size=48), raw=raw, out=out, decisions_path=None,
                      metrics_path=tmp_path / "m.json")
    recs = manifest.read(out / "manifest.jsonl")
    n_raw = len(manifest.read(raw / "manifest.jsonl"))
    small = {r["id"] for r in manifest.read(raw / "truth.jsonl")
             if r["objects"][0]["box"][2] - r["objects"][0]["box"][0] < 40}
    assert counts["images_in"] == n_raw and counts["drop_too_small"] == len(small) > 0
    assert counts["crops"] == len(recs) == n_raw - len(small)
    assert counts["drop_not_best"] == 3  # the two-spider images: the smaller spider goes
    assert json.loads((tmp_path / "m.json").read_text()) == counts
    r = recs[0]
    assert set(r) >= {"id", "file", "image_id", "box", "det_box", "conf", "side", "size",
                      "truth_label", "truth_cls", "provenance"}
    assert r["id"] == f"{r['image_id']}-0" and r["truth_cls"] == "spider" and r["truth_label"] == 1
    assert r["box"][2] - r["box"][0] == r["side"] >= 64
    with Image.open(out / r["file"]) as im:
        assert im.size == (48, 48) and im.format == "PNG"
    assert all(rec["truth_dup_group"] == rec["image_id"].rstrip("d") for rec in recs
               if rec["truth_dup_group"])


def test_crop_policy_all_detections_review_and_bad_input(raw, tmp_path, caplog):
    dets = []
    for t in manifest.read(raw / "truth.jsonl"):
        boxes = [{"box": o["box"], "conf": 0.9 - 0.1 * k, "cls": 0} for k, o in enumerate(t["objects"])]
        boxes.append({"box": [0, 0, 100, 100], "conf": 0.1, "cls": 0})  # below min_conf
        dets.append({"id": t["id"], "status": "ok", "boxes": boxes})
    dets[1] = {"id": dets[1]["id"], "status": "error", "reason": "decode failed"}
    (tmp_path / "det.jsonl").write_text("".join(json.dumps(d) + "\n" for d in dets))
    two = next(t["id"] for t in manifest.read(raw / "truth.jsonl") if len(t["objects"]) == 2)
    from spidergan.review import decisions

    for cid, verdict in ((f"{two}-0", "reject"), (f"{two}-1", "reject"), (f"{two}-1", "accept"),
                         (f"{two}-2", "reject"), (f"{two}-2", "clear")):
        decisions.append(tmp_path / "decisions.jsonl", {"kind": "crop", "key": cid, "id": cid,
                                                        "decision": verdict})
    # one raw image broken on disk
    broken = manifest.read(raw / "manifest.jsonl")[5]
    raw2 = tmp_path / "raw"
    import shutil
    shutil.copytree(raw, raw2)
    (raw2 / broken["file"]).write_bytes(b"not a jpeg")
    p = _params(boxes="detections", policy="all", min_conf=0.25, min_side=48, size=32)
    counts = crop.run(p, raw=raw2, out=tmp_path / "c", detections_path=tmp_path / "det.jsonl",
                      decisions_path=tmp_path / "decisions.jsonl", metrics_path=None)
    recs = manifest.read_by_id(tmp_path / "c" / "manifest.jsonl")
    assert f"{two}-1" in recs and f"{two}-0" not in recs
    assert counts["drop_review_rejected"] == 1 and counts["drop_detection_error"] == 1
    assert counts["drop_unreadable"] == 1 and counts["drop_low_conf"] == len(dets) - 1
    assert not any(r["image_id"] == broken["id"] for r in recs.values())
    leaf_img = next(t for t in manifest.read(raw / "truth.jsonl") if len(t["objects"]) == 2
                    and t["objects"][1]["cls"] == "leaf")
    assert recs[f"{leaf_img['id']}-1"]["truth_cls"] == "leaf"  # matched to ground truth by IoU
    rej = manifest.read(tmp_path / "c" / "rejects.jsonl")
    assert {r["reason"] for r in rej} >= {"low_conf", "unreadable", "review_rejected", "detection_error"}

    # no resume: a run into what a killed run left (half a line, a crop of old detections)
    # gives what a run into an empty folder gives, so new detections never meet stale crops
    lines = (tmp_path / "c" / "manifest.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "c" / "manifest.jsonl").write_text("".join(lines[:3]) + lines[3][:10])
    (tmp_path / "c" / "images" / "old-0.png").write_bytes(b"stale")
    again = crop.run(p, raw=raw2, out=tmp_path / "c", detections_path=tmp_path / "det.jsonl",
                     decisions_path=tmp_path / "decisions.jsonl", metrics_path=None)
    assert again == counts
    assert manifest.read_by_id(tmp_path / "c" / "manifest.jsonl") == recs
    assert sorted(f.name for f in (tmp_path / "c" / "images").iterdir()) == \
        sorted(Path(r["file"]).name for r in recs.values())

    # empty input: the stage refuses to succeed with nothing
    from spidergan.outcome import EmptyOutput

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "manifest.jsonl").write_text("")
    with pytest.raises(EmptyOutput, match="empty or missing"):
        crop.run(_params(), raw=empty, out=tmp_path / "e", decisions_path=None, metrics_path=None)
    with pytest.raises(FileNotFoundError, match="detections"):
        crop.run(_params(boxes="detections"), raw=raw, out=tmp_path / "e2",
                 detections_path=tmp_path / "nope.jsonl", metrics_path=None)


def test_exif_oriented_image_is_cropped_upright(tmp_path):
    raw = tmp_path / "raw"
    (raw / "images").mkdir(parents=True)
    a = np.zeros((200, 300, 3), np.uint8)
    a[:, :150] = 255  # stored: left half white; displayed (rotated 90 cw): top half white
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(a).save(raw / "images" / "x.jpg", exif=exif, quality=95)
    (raw / "manifest.jsonl").write_text(json.dumps({"id": "x", "file": "images/x.jpg"}) + "\n")
    (raw / "truth.jsonl").write_text(json.dumps(
        {"id": "x", "objects": [{"cls": "spider", "box": [0, 0, 200, 300], "label": 1}]}) + "\n")
    crop.run(_params(margin=0.0, min_side=10, size=30, pad="constant"), raw=raw, out=tmp_path / "c",
             decisions_path=None, metrics_path=None)
    got = np.asarray(Image.open(tmp_path / "c" / "images" / "x-0.png").convert("L")).astype(int)
    # the 300 px square over the 200x300 upright image: white top half, dark bottom half
    assert got[5, 15] > 200 and got[25, 15] < 50


def test_reviewed_detections_reach_the_crops(raw, tmp_path):
    """A rejected detection box is not cropped; an accepted box is cropped from where the
    reviewer dragged it, even below min_conf; a new decision redoes a finished folder."""
    from spidergan.review import decisions

    truth = manifest.read(raw / "truth.jsonl")
    a, b, c = truth[:3]
    box_a, box_b, box_c = (t["objects"][0]["box"] for t in (a, b, c))
    dets = [{"id": t["id"], "status": "ok", "boxes": [{"box": t["objects"][0]["box"], "conf": conf, "cls": 0}]}
            for t, conf in ((a, 0.9), (b, 0.9), (c, 0.1))]
    for t in truth[3:]:
        dets.append({"id": t["id"], "status": "ok", "boxes": []})
    (tmp_path / "det.jsonl").write_text("".join(json.dumps(d) + "\n" for d in dets))
    log = tmp_path / "decisions.jsonl"
    dragged = [box_a[0] - 4, box_a[1] - 4, box_a[2] + 4, box_a[3] + 4]
    decisions.append(log, {"kind": "detection", "key": f"{a['id']}:0", "box": dragged,
                           "orig_box": box_a, "decision": "accept"})
    decisions.append(log, {"kind": "detection", "key": f"{b['id']}:0", "box": box_b, "decision": "reject"})
    with log.open("a") as f:  # a hand-written line: no kind, key or orig_box
        f.write(json.dumps({"image_id": c["id"], "box": box_c, "decision": "accept"}) + "\n")
    p = _params(boxes="detections", min_conf=0.25, min_side=8, size=32)
    out = tmp_path / "c"
    counts = crop.run(p, raw=raw, out=out, detections_path=tmp_path / "det.jsonl",
                      decisions_path=log, metrics_path=None)
    recs = manifest.read_by_id(out / "manifest.jsonl")
    assert set(recs) == {f"{a['id']}-0", f"{c['id']}-0"} and counts["drop_review_rejected"] == 1
    assert recs[f"{a['id']}-0"]["det_box"] == dragged and recs[f"{a['id']}-0"]["review"] == "accept"
    assert recs[f"{c['id']}-0"]["review"] == "accept"  # conf 0.1, but a person accepted it

    decisions.append(log, {"kind": "detection", "key": f"{b['id']}:0", "box": box_b, "decision": "clear"})
    crop.run(p, raw=raw, out=out, detections_path=tmp_path / "det.jsonl", decisions_path=log,
             metrics_path=None)
    assert f"{b['id']}-0" in manifest.read_by_id(out / "manifest.jsonl")


def _photo_raw(root, photos):
    """A hand-made raw folder: photos = [(id, rgb array, spider box)], ground truth boxes."""
    (root / "images").mkdir(parents=True)
    man, truth = [], []
    for iid, a, box in photos:
        Image.fromarray(a).save(root / "images" / f"{iid}.png")
        man.append({"id": iid, "file": f"images/{iid}.png", "width": a.shape[1], "height": a.shape[0]})
        truth.append({"id": iid, "objects": [{"cls": "spider", "box": box, "label": 1}]})
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in man))
    (root / "truth.jsonl").write_text("".join(json.dumps(r) + "\n" for r in truth))
    return root


def _unique_pixels(h, w):
    """Every pixel a different colour, so a mirrored pixel can be told from the real one."""
    k = np.arange(h * w, dtype=np.int64).reshape(h, w)
    return np.dstack([k % 251, (k // 251) % 251, (k // 63001) % 251]).astype(np.uint8)


def test_crop_stage_uses_real_pixels_and_counts_shifted_padded_dropped(tmp_path):
    from spidergan.outcome import EmptyOutput

    edge = _unique_pixels(224, 300)      # spider at the left edge: shifted, real pixels only
    big = _unique_pixels(224, 300)       # a 200 px spider: margin gives way, still real pixels
    huge = _unique_pixels(240, 300)      # the spider is taller than... wider than the short side
    raw = _photo_raw(tmp_path / "raw", [("edge", edge, [0, 40, 150, 190]),
                                        ("big", big, [40, 10, 240, 210]),
                                        ("huge", huge, [10, 0, 290, 240])])
    out = tmp_path / "c"
    counts = crop.run(_params(margin=0.15, min_side=10, size=224, resample="box"), raw=raw, out=out,
                      decisions_path=None, metrics_path=tmp_path / "crop.json")
    assert (counts["shifted"], counts["padded"], counts["dropped"]) == (2, 1, 0)
    assert json.loads((tmp_path / "crop.json").read_text())["shifted"] == 2
    recs = manifest.read_by_id(out / "manifest.jsonl")
    for iid, a in (("edge", edge), ("big", big)):
        x0, y0, x1, y1 = recs[f"{iid}-0"]["box"]
        assert 0 <= x0 and 0 <= y0 and x1 <= a.shape[1] and y1 <= a.shape[0]
        want = np.asarray(Image.fromarray(a[y0:y1, x0:x1]).resize((224, 224), Image.BOX))
        got = np.asarray(Image.open(out / recs[f"{iid}-0"]["file"]))
        assert np.array_equal(got, want)
    # the padded crop, cut at its own side so no resampling blurs the check: the photo's rows as
    # they are, and above/below one constant colour (the border mean), never mirrored rows
    counts = crop.run(_params(margin=0.15, min_side=10, size=280, resample="box"), raw=raw,
                      out=tmp_path / "c2", decisions_path=None, metrics_path=None)
    rec = manifest.read_by_id(tmp_path / "c2" / "manifest.jsonl")["huge-0"]
    x0, y0, x1, y1 = rec["box"]
    assert (x1 - x0, y0, y1, rec["fit"]) == (280, -20, 260, "padded")
    got = np.asarray(Image.open(tmp_path / "c2" / rec["file"])).astype(int)
    assert np.array_equal(got[20:260], huge[:, x0:x1])
    fill = crop.border_colour(Image.fromarray(huge))
    assert (got[:20] == fill).all() and (got[260:] == fill).all()
    # edge padding repeats the outermost row; drop leaves the crop out, and counts it
    crop.run(_params(margin=0.15, min_side=10, size=280, resample="box", pad="edge"), raw=raw,
             out=tmp_path / "c3", decisions_path=None, metrics_path=None)
    got = np.asarray(Image.open(tmp_path / "c3" / "images" / "huge-0.png")).astype(int)
    assert (got[:20] == huge[0, x0:x1]).all() and (got[260:] == huge[-1, x0:x1]).all()
    counts = crop.run(_params(margin=0.15, min_side=10, size=64, pad="drop"), raw=raw,
                      out=tmp_path / "c4", decisions_path=None, metrics_path=None)
    assert counts["dropped"] == 1 and counts["drop_larger_than_photo"] == 1 and counts["crops"] == 2
    # every crop dropped: the stage stops naming the reason counts
    only_huge = _photo_raw(tmp_path / "raw2", [("huge", huge, [10, 0, 290, 240])])
    with pytest.raises(EmptyOutput, match="larger_than_photo 1"):
        crop.run(_params(margin=0.15, min_side=10, size=64, pad="drop"), raw=only_huge,
                 out=tmp_path / "c5", decisions_path=None, metrics_path=None)


def test_no_spider_review_leaves_the_image_out(tmp_path):
    from spidergan.review import decisions

    a = _unique_pixels(200, 200)
    raw = _photo_raw(tmp_path / "raw", [("one", a, [50, 50, 150, 150]), ("two", a, [40, 40, 160, 160])])
    log = tmp_path / "decisions.jsonl"
    decisions.append(log, {"kind": "image", "key": "two", "decision": "no_spider"})
    counts = crop.run(_params(min_side=10, size=32), raw=raw, out=tmp_path / "c", decisions_path=log,
                      metrics_path=None)
    assert counts["crops"] == 1 and counts["drop_review_no_spider"] == 1
