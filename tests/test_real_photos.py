"""A new user's real photos, end to end through the commands they type: a folder of ~224 px
photos (some under the minimum size, some spider-free, some spiders larger than the frame) and
YOLO labels from another project named by photo stem, with class ids 0/1/2 and empty files.

The CLI runs as a user runs it (a subprocess, `python -m spidergan.cli`), in a scratch project
folder. Expected figures come from the corpus the test drew, not from the code under test."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import photo_corpus
from spidergan import manifest
from spidergan.detect import labels as L
from spidergan.sources.folder import item_id

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("real")
    return photo_corpus.make(root)


def _spidergan(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(ROOT), "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin",
           "SPIDERGAN_NETGUARD": "1", "HOME": str(cwd)}
    return subprocess.run([sys.executable, "-m", "spidergan.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def _project(tmp_path: Path, corpus: dict, min_side: int) -> Path:
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "params.yaml").write_text(yaml.safe_dump({"scrape": {
        "source": "folder", "min_side": min_side, "folder": {"path": str(corpus["photos"])}}}))
    return proj


def test_scrape_with_every_photo_too_small_fails_naming_why(corpus, tmp_path):
    proj = _project(tmp_path, corpus, min_side=256)
    r = _spidergan(proj, "scrape")
    n = len(corpus["boxes"]) + len(corpus["empty"]) + len(corpus["small"])
    assert r.returncode == 1, r.stdout + r.stderr
    assert (f"all {n} inputs left out: too_small {n} (scrape.min_side 256; largest image "
            f"{photo_corpus.SIDE} px") in r.stderr
    assert "Traceback" not in r.stderr
    assert json.loads((proj / "metrics/scrape.json").read_text())["images"] == 0


def test_yolo_labels_by_stem_import_with_reasons(corpus, tmp_path):
    proj = _project(tmp_path, corpus, min_side=200)
    r = _spidergan(proj, "scrape")
    assert r.returncode == 0, r.stderr
    n_ok = len(corpus["boxes"]) + len(corpus["empty"])
    assert (f"scrape: {n_ok} images in data/raw" in r.stdout
            and f"left out: too_small {len(corpus['small'])}" in r.stdout)
    raw = manifest.read_by_id(proj / "data/raw/manifest.jsonl")
    assert len(raw) == n_ok

    r = _spidergan(proj, "import-labels", "--format", "yolo", str(corpus["labels"]))
    assert r.returncode == 0, r.stdout + r.stderr
    good = {rel: b for rel, b in corpus["boxes"].items() if rel != corpus["bad"]}
    n_boxes = sum(len(b) for b in good.values())
    want_images = len(good) + len(corpus["empty"])
    n_missing = len(corpus["small"]) + 1   # photos rejected by scrape, and the orphan label
    assert (f"imported {n_boxes} boxes on {want_images} images ({len(corpus['empty'])} of them "
            f"without a spider); rejected {1 + n_missing} (image_missing {n_missing}, bad_line 1)"
            ) in r.stdout, r.stdout
    per_class = {}
    for rel in good:
        for c in corpus["classes"][rel]:
            per_class[c] = per_class.get(c, 0) + 1
    names = ["orb weaver", "jumping spider", "wolf spider"]
    for c, k in per_class.items():
        assert f"{c} ({names[c]}) x{k}" in r.stdout
    assert "garden/IMG_0001.txt: bad_line line 2" in r.stdout

    # written by opaque image id, the boxes as drawn (YOLO keeps 6 decimals: < 0.01 px here)
    got, rejects = L.read_folder(proj / "data/labels", proj / "data/raw")
    assert rejects == []
    assert set(got) == {item_id(rel) for rel in list(good) + corpus["empty"]}
    for rel, boxes in good.items():
        for a, b in zip(got[item_id(rel)], boxes):
            assert all(abs(x - y) < 0.01 for x, y in zip(a, b)), (rel, a, b)
    for rel in corpus["empty"]:
        assert got[item_id(rel)] == [] and (proj / f"data/labels/{item_id(rel)}.txt").read_text() == ""

    # --classes restricts: other ids are skipped and counted, not errors
    r = _spidergan(proj, "import-labels", "--format", "yolo", "--classes", "0,2", "--dry-run",
                   str(corpus["labels"]))
    assert r.returncode == 0
    skipped = per_class.get(1, 0)
    assert f"imported {n_boxes - skipped} boxes" in r.stdout
    if skipped:
        assert f"skipped other classes: 1 (jumping spider) x{skipped}" in r.stdout


def test_flat_label_folder_with_shared_stems_is_ambiguous(corpus, tmp_path):
    """IMG_0001 exists in garden/ and porch/: a flat label folder cannot say which it means."""
    proj = _project(tmp_path, corpus, min_side=200)
    assert _spidergan(proj, "scrape").returncode == 0
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "IMG_0002.txt").write_text("0 0.5 0.5 0.4 0.4\n")
    (flat / "folder-notanid.txt").write_text("")
    rel = "garden/IMG_0002.jpg"
    (flat / f"{item_id(rel)}.txt").write_text("0 0.5 0.5 0.4 0.4\n")   # by image id: fine
    rep = L.import_labels("yolo", flat, out=tmp_path / "out", raw_dir=proj / "data/raw")
    assert rep.written == {item_id(rel): 1}
    reasons = {r["item"]: r["reason"] for r in rep.rejected}
    assert reasons == {"IMG_0002.txt": "ambiguous", "folder-notanid.txt": "image_missing"}


def test_import_before_scrape_says_so(tmp_path):
    (tmp_path / "labels").mkdir()
    r = _spidergan(tmp_path, "import-labels", "--format", "yolo", str(tmp_path / "labels"))
    assert r.returncode == 1 and "run `dvc repro scrape` first" in r.stderr


def test_coco_export_naming_original_files_finds_the_right_folder(corpus, tmp_path):
    """The same matching for other tools' exports: `porch/IMG_0002.jpg` is not garden's."""
    proj = _project(tmp_path, corpus, min_side=200)
    assert _spidergan(proj, "scrape").returncode == 0
    raw = manifest.read_by_id(proj / "data/raw/manifest.jsonl")
    rel = "porch/IMG_0002.jpg"
    w, h = raw[item_id(rel)]["width"], raw[item_id(rel)]["height"]
    coco = {"images": [{"id": 1, "file_name": rel, "width": w, "height": h}],
            "categories": [{"id": 1, "name": "spider"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 50, 50]}]}
    (tmp_path / "c.json").write_text(json.dumps(coco))
    rep = L.import_labels("coco", tmp_path / "c.json", out=tmp_path / "out", raw_dir=proj / "data/raw")
    assert rep.written == {item_id(rel): 1}
