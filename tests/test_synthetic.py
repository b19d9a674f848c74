"""The synthetic spider photo source: determinism, exact ground truth, planted special cases."""

from __future__ import annotations

import json

import cv2
import imagehash
import numpy as np
import pytest
from PIL import Image

from spidergan import env, manifest, scrape
from spidergan.params import ScrapeParams, SyntheticParams
from spidergan.sources import synthetic

env.setup()
cv2.setNumThreads(1)

N = 200


@pytest.fixture(scope="module")
def items():
    return list(synthetic.generate(SyntheticParams(count=N), seed=0))


def _decode(item) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(item.jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None, f"{item.id}: not a decodable JPEG"
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def test_exact_count_ids_and_index_order(items):
    assert len(items) == N
    assert [it.id for it in items] == [f"syn-{i:05d}" for i in range(N)]
    assert [it.index for it in items] == list(range(N))


def test_same_seed_same_bytes_and_truth(items):
    again = list(synthetic.generate(SyntheticParams(count=6), seed=0))
    for a, b in zip(items[:6], again):
        assert a.jpeg == b.jpeg
        assert np.array_equal(a.mask, b.mask)
        assert a.objects_json() == b.objects_json()


def test_different_seed_differs(items):
    other = list(synthetic.generate(SyntheticParams(count=4), seed=1))
    assert all(a.jpeg != b.jpeg for a, b in zip(items[:4], other))


def test_larger_count_extends_the_same_set(items):
    # items (count 200) must start with exactly the count-21 set, duplicates included
    small = list(synthetic.generate(SyntheticParams(count=21), seed=0))
    for a, b in zip(items, small):
        assert (a.id, a.jpeg, a.size, a.dup_group, a.dup_of) == (b.id, b.jpeg, b.size, b.dup_group, b.dup_of)
        assert np.array_equal(a.mask, b.mask) and a.objects_json() == b.objects_json()
    # and a single item can be made alone, identically
    assert synthetic.make_item(SyntheticParams(), 0, 17).jpeg == items[17].jpeg


def test_sizes_in_range_and_match_the_jpeg(items):
    p = SyntheticParams()
    shapes = set()
    for it in items:
        img = _decode(it)
        h, w = img.shape[:2]
        assert (w, h) == it.size == (it.mask.shape[1], it.mask.shape[0])
        assert p.min_size <= min(w, h) and max(w, h) <= p.max_size, it.id
        shapes.add(round(w / h, 1))
    assert len(shapes) >= 5, "expected mixed aspect ratios, portrait and landscape"


def test_ground_truth_boxes_are_tight_bounds_of_the_masks(items):
    for it in items:
        assert it.mask.dtype == np.uint8
        labels = {o.label for o in it.objects}
        assert len(labels) == len(it.objects), f"{it.id}: duplicate labels"
        assert set(np.unique(it.mask)) - {0} == labels, it.id
        for o in it.objects:
            assert o.cls in ("spider", "caterpillar", "leaf")
            ys, xs = np.nonzero(it.mask == o.label)
            assert o.box == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], (it.id, o)
            assert all(isinstance(v, float) for v in o.box)
        js = it.objects_json()
        assert json.loads(json.dumps(js)) == js
        assert set(js[0]) == {"cls", "box", "label"} if js else True


def test_masks_cover_the_drawn_objects(items):
    # the object pixels must differ from the surrounding background: a mask on empty
    # background would mean truth and image disagree
    for it in items[:40]:
        if it.dup_of:
            continue
        img = _decode(it).astype(np.float32)
        for o in it.objects:
            x0, y0, x1, y1 = (int(v) for v in o.box)
            inside = it.mask == o.label
            assert inside.sum() >= 20, (it.id, o)
            ring = np.zeros_like(inside)
            ring[max(0, y0 - 6):y1 + 6, max(0, x0 - 6):x1 + 6] = True
            ring &= it.mask == 0
            diff = np.abs(img[inside].mean(0) - img[ring].mean(0)).max() if ring.any() else 99
            edge = cv2.Canny(cv2.cvtColor(img.astype(np.uint8), cv2.COLOR_RGB2GRAY), 40, 100)
            assert diff > 3 or edge[inside].mean() > 5, (it.id, o.cls, diff)


def test_every_special_case_is_planted(items):
    spiders = [[o for o in it.objects if o.cls == "spider"] for it in items]
    assert any(len(s) == 2 for s in spiders), "no image with two spiders"
    assert any(s and min(max(o.box[2] - o.box[0], o.box[3] - o.box[1]) for o in s) < synthetic.SMALL_SIDE
               for s in spiders), "no spider too small to crop"
    assert any(o.cls == "caterpillar" for it in items for o in it.objects)
    assert any(o.cls == "leaf" for it in items for o in it.objects)
    assert any(not s for s in spiders), "no image without any spider (distractor alone)"
    assert any(it.kind.get("web") for it in items)
    assert {it.kind["background"] for it in items} >= set(synthetic.BACKGROUNDS)
    kinds = {k for it in items for k in it.kind.get("spiders", [])}
    assert len(kinds) >= 6, kinds
    dups = [it for it in items if it.dup_of]
    assert 5 <= len(dups) <= 60
    # large spiders: most images have a spider big enough to crop well
    big = sum(any(max(o.box[2] - o.box[0], o.box[3] - o.box[1]) >= 150 for o in s) for s in spiders)
    assert big >= N // 2


def test_duplicate_groups_are_consistent(items):
    by_id = {it.id: it for it in items}
    for it in items:
        if it.dup_of is None:
            continue
        orig = by_id[it.dup_of]
        assert orig.dup_of is None and orig.dup_group == it.dup_group == f"dup-{orig.index:05d}"
        assert orig.index < it.index and orig.index // 16 == it.index // 16
        assert it.jpeg != orig.jpeg
        # the same objects, transformed with the image
        assert {(o.label, o.cls) for o in it.objects} <= {(o.label, o.cls) for o in orig.objects}
        sx = it.size[0] / orig.size[0]
        for o in it.objects:
            oo = next(x for x in orig.objects if x.label == o.label)
            w, ow = o.box[2] - o.box[0], oo.box[2] - oo.box[0]
            assert w <= ow * 1.3 + 2 and (w >= ow * sx * 0.5 or w < ow), (it.id, o, oo)
    groups = {it.dup_group for it in items if it.dup_group}
    for g in groups:
        members = [it for it in items if it.dup_group == g]
        assert sum(m.dup_of is None for m in members) == 1, g


def test_planted_duplicates_are_perceptual_near_duplicates(items):
    by_id = {it.id: it for it in items}
    ph = {}

    def h(it):
        if it.id not in ph:
            ph[it.id] = imagehash.phash(Image.fromarray(_decode(it)))
        return ph[it.id]

    pairs = [(by_id[it.dup_of], it) for it in items if it.dup_of]
    planted = [h(a) - h(b) for a, b in pairs]
    rng = np.random.default_rng(0)
    plain = [it for it in items if not it.dup_group]
    rand = [h(plain[i]) - h(plain[j]) for i, j in rng.integers(0, len(plain), (60, 2)) if i != j]
    assert max(planted) <= 16, planted
    assert np.median(planted) <= 8, planted
    assert np.median(rand) >= 24, rand
    # a dedup threshold between the two exists: almost no random pair is that close
    assert np.mean(np.array(rand) <= max(planted)) <= 0.05, (sorted(rand)[:5], max(planted))


def test_scrape_stage_writes_images_truth_and_resumes(tmp_path):
    p = ScrapeParams(synthetic=SyntheticParams(count=6))
    out = tmp_path / "raw"
    counts = scrape.run(p, seed=0, out=out, metrics_path=tmp_path / "m.json")
    assert counts["written"] == 6 and counts["rejected"] == 0
    man = manifest.read_by_id(out / "manifest.jsonl")
    truth = manifest.read_by_id(out / "truth.jsonl")
    assert set(man) == set(truth) == {f"syn-{i:05d}" for i in range(6)}
    for rid, rec in man.items():
        with Image.open(out / rec["file"]) as im:
            assert im.format == "JPEG" and im.size == (rec["width"], rec["height"])
        m = np.asarray(Image.open(out / truth[rid]["mask"]))
        assert m.shape == (rec["height"], rec["width"])
        assert set(np.unique(m)) - {0} == {o["label"] for o in truth[rid]["objects"]}
    again = scrape.run(p, seed=0, out=out, metrics_path=None)
    assert again["skipped_existing"] == 6 and again["written"] == 0


def test_cli_synthetic_sample(tmp_path, monkeypatch):
    from spidergan import cli

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("seed: 3\n")
    out = tmp_path / "grid.png"
    assert cli.main(["synthetic-sample", "--count", "5", "--cols", "3", "--cell", "96",
                     "--boxes", "--out", str(out)]) == 0
    with Image.open(out) as im:
        # sheets.grid's layout: 3 cells a row, 2 rows, each cell labelled, 4 px apart
        assert im.size == (4 + 3 * (96 + 4), 4 + 2 * (96 + 13 + 4))
        arr = np.asarray(im.convert("RGB")).astype(int)
    red = (arr[:, :, 0] > 180) & (arr[:, :, 1] < 80) & (arr[:, :, 2] < 80)
    assert red.sum() > 10          # red truth boxes were drawn


def test_param_fractions_steer_the_special_cases():
    p = SyntheticParams(count=48, dup_fraction=0.0, two_spider_fraction=1.0, small_fraction=0.0,
                        distractor_fraction=0.0, web_fraction=0.0)
    its = list(synthetic.generate(p, seed=5))
    assert not any(it.dup_group for it in its)
    assert sum(sum(o.cls == "spider" for o in it.objects) == 2 for it in its) >= 40
    assert not any(it.kind["web"] for it in its)
    assert not any(o.cls != "spider" for it in its for o in it.objects)


def test_draw_spider_on_any_image():
    rng = np.random.default_rng(0)
    bg = np.full((240, 320, 3), 170, np.uint8)
    mask = np.zeros((240, 320), np.uint8)
    box = synthetic.draw_spider(bg, rng, span=150, center=(160, 120), kind="wolf", mask=mask, label=3)
    ys, xs = np.nonzero(mask == 3)
    assert box == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    assert 100 <= max(box[2] - box[0], box[3] - box[1]) <= 152
    assert bg[mask == 3].mean() < 120 < bg[mask == 0].mean()        # a dark spider, drawn


def test_sizes_hold_for_duplicates_when_bounds_are_tight():
    p = SyntheticParams(count=24, min_size=320, max_size=330, dup_fraction=0.5)
    its = list(synthetic.generate(p, seed=3))
    assert any(it.dup_of for it in its)
    for it in its:
        assert 320 <= min(it.size) and max(it.size) <= 330, (it.id, it.size)
        assert _decode(it).shape[1::-1] == it.size
