"""The folder source and the ingest path shared by all sources (validation, conversion, resume)."""

from __future__ import annotations

import io
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spidergan import env, images, manifest, params, scrape
from spidergan.sources import folder

env.setup()


def save(path: Path, im: Image.Image, fmt: str | None = None, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, format=fmt, **kw)
    return path


def textured(w, h, mode="RGB"):
    g = Image.linear_gradient("L").resize((w, h))
    if mode == "L":
        return g
    rgb = Image.merge("RGB", [g, g.transpose(Image.Transpose.FLIP_LEFT_RIGHT), g.rotate(90)])
    return rgb.convert(mode) if mode != "RGB" else rgb


def folder_params(path, min_side=64):
    return params.from_dict({"scrape": {"source": "folder", "min_side": min_side,
                                        "folder": {"path": str(path)}}}).scrape


@pytest.fixture
def photos(tmp_path):
    src = tmp_path / "photos"
    save(src / "a.jpg", textured(160, 120))
    save(src / "b/gray.png", textured(100, 80, "L"))
    save(src / "b/cmyk.jpg", textured(120, 90, "CMYK"))
    save(src / "b/c/alpha.png", textured(100, 100, "RGBA"))
    save(src / "b/c/pal.webp", textured(90, 90), "WEBP")
    sixteen = Image.fromarray((np.arange(80 * 100).reshape(80, 100) * 7).astype(np.uint16))
    save(src / "d/deep.tiff", sixteen, "TIFF")
    # stored landscape 200x100 with EXIF orientation 6: upright it is portrait 100x200
    exif = Image.Exif()
    exif[0x0112] = 6
    save(src / "rot.JPG", textured(200, 100), "JPEG", exif=exif)
    save(src / "tiny.jpg", textured(40, 30))
    good = io.BytesIO()
    textured(160, 120).save(good, format="JPEG")
    (src / "broken.jpg").write_bytes(good.getvalue()[:900])
    (src / "notes.txt").write_text("not an image")
    (src / "fake.png").write_text("<html>not a png</html>")
    return src


def test_folder_import_recursive_with_reasons(photos, tmp_path):
    out, metrics = tmp_path / "raw", tmp_path / "m.json"
    scrape.run(folder_params(photos), seed=0, out=out, metrics_path=metrics)
    recs = manifest.read(out / "manifest.jsonl")
    by_path = {r["provenance"]["path"]: r for r in recs}
    assert sorted(by_path) == ["a.jpg", "b/c/alpha.png", "b/c/pal.webp", "b/cmyk.jpg",
                               "b/gray.png", "d/deep.tiff", "rot.JPG"]
    assert [r["provenance"]["path"] for r in recs] == sorted(by_path)  # walk order, sorted
    for r in recs:
        assert r["source"] == "folder" and r["id"] == folder.item_id(r["provenance"]["path"])
        with Image.open(out / r["file"]) as im:
            assert im.mode == "RGB" and im.format in ("JPEG", "PNG")
            assert im.size == (r["width"], r["height"])
    assert (by_path["rot.JPG"]["width"], by_path["rot.JPG"]["height"]) == (100, 200)
    assert by_path["a.jpg"]["sha256"] == by_path["a.jpg"]["provenance"]["source_sha256"]
    assert by_path["d/deep.tiff"]["file"].endswith(".png")
    rejects = {r["detail"].split(":")[0]: r["reason"] for r in manifest.read(out / "rejects.jsonl")}
    assert rejects == {"tiny.jpg": "too_small", "broken.jpg": "corrupt",
                       "notes.txt": "unsupported_type", "fake.png": "not_an_image"}
    m = json.loads(metrics.read_text())
    assert (m["images"], m["written"], m["skipped"], m["rejected"]) == (7, 7, 1, 3)
    assert not (out / "ATTRIBUTION.csv").exists()


def test_folder_rerun_reuses_and_follows_changes(photos, tmp_path):
    out = tmp_path / "raw"
    scrape.run(folder_params(photos), seed=0, out=out, metrics_path=None)
    stamp = {p.name: p.stat().st_mtime_ns for p in (out / "images").iterdir()}
    c = scrape.run(folder_params(photos), seed=0, out=out, metrics_path=None)
    assert c["skipped_existing"] == 7 and c["written"] == 0
    assert {p.name: p.stat().st_mtime_ns for p in (out / "images").iterdir()} == stamp
    (photos / "a.jpg").unlink()
    save(photos / "new/e.png", textured(90, 70))
    c = scrape.run(folder_params(photos), seed=0, out=out, metrics_path=None)
    paths = [r["provenance"]["path"] for r in manifest.read(out / "manifest.jsonl")]
    assert "a.jpg" not in paths and "new/e.png" in paths and c["written"] == 1
    assert len(list((out / "images").iterdir())) == 7  # a.jpg's copy is gone


def test_folder_missing_is_a_clear_error(tmp_path):
    with pytest.raises(folder.FolderError, match="not a folder"):
        scrape.run(folder_params(tmp_path / "nope"), seed=0, out=tmp_path / "raw",
                   metrics_path=None)
    with pytest.raises(params.ParamsError, match="folder.path"):
        params.from_dict({"scrape": {"source": "folder"}})


def test_validate_bytes_decides_keep_or_reencode():
    buf = io.BytesIO()
    textured(64, 48).save(buf, format="JPEG")
    v = images.validate_bytes(buf.getvalue())
    assert v.keep_original and v.suffix == ".jpg" and v.size == (64, 48)
    buf = io.BytesIO()
    textured(64, 48, "L").save(buf, format="JPEG")
    v = images.validate_bytes(buf.getvalue())
    assert not v.keep_original and v.image.mode == "RGB"
    assert Image.open(io.BytesIO(images.encode(v))).mode == "RGB"
    mpo = io.BytesIO()  # phone photos: a JPEG with a second frame appended
    textured(64, 48).save(mpo, format="MPO", save_all=True, append_images=[textured(64, 48, "L")])
    v = images.validate_bytes(mpo.getvalue())
    assert v.format == "MPO" and not v.keep_original and v.suffix == ".jpg"
    with pytest.raises(images.ImageRejected) as ei:
        images.validate_bytes(b"")
    assert ei.value.reason == "empty"
    with pytest.raises(images.ImageRejected) as ei:
        images.validate_bytes(buf.getvalue(), min_side=100)
    assert ei.value.reason == "too_small"


# --------------------------------------------------------------------------- synthetic branch
class _Item:
    def __init__(self, i, size):
        self.id = f"syn-{i:06d}"
        self.index = i
        self.size = size
        b = io.BytesIO()
        textured(*size).rotate(i).save(b, format="JPEG")
        self.jpeg = b.getvalue()
        self.mask = np.zeros(size[::-1], np.uint8)
        self.mask[5:20, 5:20] = 1
        self.dup_group = None
        self.dup_of = None

    def objects_json(self):
        return [{"cls": "spider", "box": [5, 5, 20, 20], "label": 1}]


def test_synthetic_goes_through_the_same_ingest(tmp_path, monkeypatch):
    sizes = {0: (96, 80), 1: (40, 30), 2: (100, 90)}
    fake = types.ModuleType("spidergan.sources.synthetic")
    fake.generate = lambda sp, seed: (_Item(i, s) for i, s in sizes.items() if i < sp.count)
    monkeypatch.setitem(sys.modules, "spidergan.sources.synthetic", fake)
    import spidergan.sources as pkg
    monkeypatch.setattr(pkg, "synthetic", fake, raising=False)
    p = params.from_dict({"scrape": {"min_side": 64, "synthetic": {"count": 3}}}).scrape
    out = tmp_path / "raw"
    c = scrape.run(p, seed=0, out=out, metrics_path=None)
    recs = manifest.read(out / "manifest.jsonl")
    assert [r["id"] for r in recs] == ["syn-000000", "syn-000002"] and c["rejected"] == 1
    truth = manifest.read(out / "truth.jsonl")
    assert [t["id"] for t in truth] == ["syn-000000", "syn-000002"]
    assert all((out / t["mask"]).is_file() for t in truth)
    assert manifest.read(out / "rejects.jsonl")[0]["reason"] == "too_small"
    c = scrape.run(p, seed=0, out=out, metrics_path=None)
    assert c["skipped_existing"] == 2 and c["written"] == 0
    p2 = params.from_dict({"scrape": {"min_side": 64, "synthetic": {"count": 1}}}).scrape
    scrape.run(p2, seed=0, out=out, metrics_path=None)
    assert [r["id"] for r in manifest.read(out / "manifest.jsonl")] == ["syn-000000"]
    assert sorted(p.name for p in (out / "truth").iterdir()) == ["syn-000000.png"]
    # switching the source keeps nothing of the synthetic run (ground truth included)
    photos = tmp_path / "photos"
    save(photos / "x.png", textured(90, 70))
    scrape.run(folder_params(photos), seed=0, out=out, metrics_path=None)
    assert [r["source"] for r in manifest.read(out / "manifest.jsonl")] == ["folder"]
    assert len(list((out / "images").iterdir())) == 1
    assert not (out / "truth").exists() and not (out / "truth.jsonl").exists()
