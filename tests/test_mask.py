"""The mask stage with real components: OpenCV GrabCut, rembg's own session code driving a tiny
ONNX network exported here with torch.onnx, and the offline missing-weights path."""

from __future__ import annotations

import json
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spidergan import env, manifest, params
from spidergan.mask import base as mask_base
from spidergan.mask import grabcut as mask_grabcut
from spidergan.mask import rembg as mask_rembg
from spidergan.mask import stage as mask_stage
from spider_pictures import spider_crop, write_source

env.setup()
os.environ.setdefault("SPIDERGAN_NETGUARD_LOG", str(Path(tempfile.mkdtemp()) / "netguard.log"))
env.install_network_guard()


def _net_attempts() -> str:
    log = Path(os.environ["SPIDERGAN_NETGUARD_LOG"])
    return log.read_text() if log.exists() else ""


def mask_params(**kw) -> params.MaskParams:
    gc = kw.pop("grabcut", {})
    return params.from_dict({"mask": {**kw, "grabcut": gc}}).mask


@pytest.fixture
def rembg_home(tmp_path, monkeypatch) -> Path:
    """An empty rembg home for this test (rembg reads U2NET_HOME at call time)."""
    home = tmp_path / "state" / "rembg"
    home.mkdir(parents=True)
    monkeypatch.setenv("U2NET_HOME", str(home))
    return home


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory) -> Path:
    """A U^2-Net-shaped network (1x3x320x320 in, 1x1x320x320 first of two outputs) that calls
    dark pixels foreground: enough to tell a dark spider from a light background."""
    import torch

    class Darkness(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 1, 3, padding=1)
            with torch.no_grad():
                self.conv.weight.zero_()
                self.conv.weight[:, :, 1, 1] = -1.0
                self.conv.bias.fill_(0.0)

        def forward(self, x):
            d = torch.sigmoid(3.0 * self.conv(x))
            return d, 1.0 - d

    path = tmp_path_factory.mktemp("onnx") / "darkness.onnx"
    with warnings.catch_warnings():  # the TorchScript exporter needs no onnxscript; it warns
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(Darkness().eval(), (torch.zeros(1, 3, 320, 320),), str(path),
                          dynamo=False, input_names=["input"], output_names=["d0", "d1"])
    return path


def _run(p, src, out, **kw):
    man, crops, raw = src
    return mask_stage.run(p, seed=0, manifest_path=man, images_root=crops, out=out, raw_root=raw,
                       metrics_path=out.parent / "metrics" / "mask.json",
                       plots_dir=out.parent / "plots" / "mask", **kw)


# --------------------------------------------------------------------------- GrabCut
def test_grabcut_masks_synthetic_crops_and_reruns_afresh(tmp_path):
    src = write_source(tmp_path / "src", n=5)
    out = tmp_path / "masked"
    m = _run(mask_params(), src, out)
    assert m["method"] == "grabcut" and m["kept"] == 5 and m["rejected"] == 0
    assert m["iou_n"] == 5 and m["iou_mean"] >= 0.8, m  # spider 0's crop runs past the image
    on_disk = json.loads((tmp_path / "metrics" / "mask.json").read_text())
    assert on_disk == {k: v for k, v in m.items() if k != "method"}  # numbers only
    recs = manifest.read(out / "manifest.jsonl")
    assert [r["id"] for r in recs] == [f"syn{i:03d}-0" for i in range(5)]
    for r in recs:
        comp = np.asarray(Image.open(out / r["file"]))
        alpha = np.asarray(Image.open(out / r["alpha"]))
        assert comp.shape == (128, 128, 3) and alpha.shape == (128, 128)
        assert (comp[alpha == 0] == 255).all()  # white background where there is no spider
        assert r["crop_file"] == f"images/{r['id']}.png" and r["provenance"]["source"] == "synthetic"
        assert 0.02 < r["mask_area"] < 0.5 and r["iou"] is not None
    sheet = Image.open(tmp_path / "plots" / "mask" / "contact_sheet.png")
    assert sheet.width < sheet.height  # one crop per row: original | mask | composite

    # a second run starts from an empty folder and writes the same bytes
    before = (out / "manifest.jsonl").read_bytes()
    assert _run(mask_params(), src, out) == m
    assert (out / "manifest.jsonl").read_bytes() == before

    # changed params: every crop redone (a black background now)
    m2 = _run(mask_params(background="black"), src, out)
    assert m2["kept"] == 5
    r = manifest.read(out / "manifest.jsonl")[1]
    comp, alpha = np.asarray(Image.open(out / r["file"])), np.asarray(Image.open(out / r["alpha"]))
    assert (comp[alpha == 0] == 0).all()


def test_grabcut_without_geometry_uses_margin():
    img, truth = spider_crop(3)
    alpha, fg = mask_grabcut.GrabCutMasker(mask_params().grabcut)(img, {})
    assert fg is None and mask_stage.iou(alpha >= 128, truth) >= 0.8


def _thin_legged_crop(i: int, kind: str):
    """A house or cellar spider (the synthetic source's own drawing: legs 1-3 px) on a smooth
    texture, its true box as the det box."""
    from spidergan.sources.synthetic import draw_spider
    from spider_pictures import texture

    rng = np.random.default_rng(i)
    rgb, m = texture(rng, 256, 256), np.zeros((256, 256), np.uint8)
    box = draw_spider(rgb, rng, 180, (128, 128), kind=kind, mask=m)
    return Image.fromarray(rgb), m > 0, {"box": [0, 0, 256, 256], "det_box": box}


def test_grabcut_keeps_thin_legs():
    # OpenCV's grabCut fixes its smoothness at 50, which cuts 1-3 px legs and fills the gaps
    # between them; our cut's smoothness keeps them, and refine adds thin spider-coloured
    # structures the cut still missed
    crops = [_thin_legged_crop(i, k) for i, k in enumerate(["house", "cellar", "house", "cellar"])]

    def score(**gc):
        masker = mask_grabcut.GrabCutMasker(mask_params(grabcut=gc).grabcut)
        return np.mean([mask_stage.iou(masker(img, rec)[0] >= 128, gt) for img, gt, rec in crops])

    default, unrefined = score(), score(refine=False)
    opencv_like, opencv = score(refine=False, smoothness=50.0), score(refine=False, cut="opencv")
    assert default >= 0.5 and default >= unrefined + 0.02, (default, unrefined)
    assert unrefined >= opencv_like + 0.15 and unrefined >= opencv + 0.07, \
        (unrefined, opencv_like, opencv)
    # refine gives OpenCV's cut (grabcut.cut: opencv) its legs back too
    assert score(cut="opencv") >= opencv + 0.05, (score(cut="opencv"), opencv)


def test_grabcut_with_opencv_cut_masks_synthetic_crops(tmp_path):
    src = write_source(tmp_path / "src", n=5)
    m = _run(mask_params(grabcut={"cut": "opencv"}), src, tmp_path / "masked")
    assert m["kept"] == 5 and m["iou_mean"] >= 0.75, m


def _one_hue_crop(i: int, kind: str, hue: tuple):
    """The synthetic source's spider, with its soft shadow, on a one-hue surface (a leaf,
    sand): the shadow is that hue darker, close to a brown or grey spider's own colours."""
    from spidergan.sources.synthetic import draw_spider
    from spider_pictures import texture

    rng = np.random.default_rng(100 + i)
    grey = texture(rng, 192, 192).astype(np.float32).mean(-1, keepdims=True)
    rgb, m = np.clip(grey * np.array(hue), 0, 255).astype(np.uint8), np.zeros((192, 192), np.uint8)
    box = draw_spider(rgb, rng, 140, (96, 96), kind=kind, mask=m)
    return Image.fromarray(rgb), m > 0, {"box": [0, 0, 192, 192], "det_box": box}


def test_grabcut_shadow_model_leaves_cast_shadows_out():
    hues = [(1.1, 1.0, 0.75), (0.75, 1.1, 0.6)]
    crops = [_one_hue_crop(i, k, hues[i % 2])
             for i, k in enumerate(["wolf", "jumper", "orb", "widow", "house", "wolf", "orb", "house"])]

    def score(**gc):
        masker = mask_grabcut.GrabCutMasker(mask_params(grabcut=gc).grabcut)
        return np.mean([mask_stage.iou(masker(img, rec)[0] >= 128, gt) for img, gt, rec in crops])

    with_shadows, without = score(), score(shadow=[])
    assert with_shadows >= 0.8 and with_shadows >= without + 0.01, (with_shadows, without)


def test_graph_cut_follows_log_odds_smoothness_and_seeds():
    flat = np.full((24, 24, 3), 100, np.uint8)
    none = np.zeros((24, 24), bool)
    odds = np.full((24, 24), -3.0)
    odds[6:14, 6:14] = 3.0
    cut = mask_grabcut._Grid(flat, 1.0).cut(odds, none, none)
    assert (cut == (odds > 0)).all()
    # a one-pixel line of weak evidence: kept under weak smoothness, cut under strong
    line = np.full((24, 24), -0.5)
    line[12, 2:22] = 2.0
    assert mask_grabcut._Grid(flat, 0.2).cut(line, none, none)[12, 2:22].all()
    assert not mask_grabcut._Grid(flat, 5.0).cut(line, none, none).any()
    # sure labels hold against any evidence; a colour edge is cheap to cut along
    sure_bg, sure_fg = none.copy(), none.copy()
    sure_bg[8, 8], sure_fg[0, 0] = True, True
    cut = mask_grabcut._Grid(flat, 1.0).cut(odds, sure_bg, sure_fg)
    assert cut[0, 0] and not cut[8, 8] and cut[9, 9]
    # contrast-sensitive: weak evidence for a square survives where a colour edge outlines it
    weak = np.where(odds > 0, 0.3, -0.3)
    square = flat.copy()
    square[6:14, 6:14] = 200
    assert not mask_grabcut._Grid(flat, 2.0).cut(weak, none, none).any()
    assert (mask_grabcut._Grid(square, 2.0).cut(weak, none, none) == (odds > 0)).all()


@pytest.mark.parametrize("cut", ["own", "opencv"])
@pytest.mark.parametrize("colour", [(128, 128, 128), (30, 200, 40)])
def test_grabcut_blank_crop_gives_empty_mask(colour, cut):
    # nothing differs from the border: the core is sure spider only for GrabCut's sake
    masker = mask_grabcut.GrabCutMasker(mask_params(grabcut={"cut": cut}).grabcut)
    alpha, _ = masker(Image.new("RGB", (128, 128), colour), {})
    assert not (alpha >= 128).any()


def test_truth_mask_is_cut_with_the_crop_geometry(tmp_path):
    man, crops, raw = write_source(tmp_path, n=2)
    truth = mask_stage.TruthMasks(raw)
    rec = manifest.read(man)[0]  # this square runs past the top-left corner of its image
    assert rec["box"][0] < 0 or rec["box"][1] < 0
    gt = truth.mask(rec, (128, 128))
    assert gt.shape == (128, 128) and 0.03 < gt.mean() < 0.5
    assert not gt[0].any() and not gt[:, 0].any()  # outside the picture is never spider
    assert truth.mask({**rec, "truth_label": None}, (128, 128)) is None


@pytest.mark.parametrize("background", ["white", "black", "gray", "blur", "noise"])
def test_backgrounds(background):
    img, truth = spider_crop(1, size=64)
    alpha = np.where(truth, 255, 0).astype(np.uint8)
    comp = np.asarray(mask_stage.composite(img, alpha, background, noise_seed=7))
    orig = np.asarray(img)
    assert (comp[truth] == orig[truth]).all()
    bg = comp[~truth]
    if background in mask_stage.BACKGROUND_COLOURS:
        assert (bg == mask_stage.BACKGROUND_COLOURS[background]).all()
    elif background == "noise":
        assert bg.std() > 50
        again = np.asarray(mask_stage.composite(img, alpha, background, noise_seed=7))
        assert (again == comp).all()
    else:  # blur: smoother than the original background
        assert np.abs(np.diff(comp.astype(int), axis=1))[~truth[:, 1:]].mean() < \
            np.abs(np.diff(orig.astype(int), axis=1))[~truth[:, 1:]].mean()


def test_bad_crops_are_dropped_with_reasons(tmp_path):
    man, crops, raw = write_source(tmp_path / "src", n=2)
    recs = manifest.read(man)
    Image.new("RGB", (128, 128), (128, 128, 128)).save(crops / "images" / "blank.png")
    (crops / "images" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    extra = [{**recs[0], "id": "blank", "file": "images/blank.png", "truth_label": None},
             {**recs[0], "id": "corrupt", "file": "images/corrupt.png"},
             {**recs[0], "id": "gone", "file": "images/gone.png"}]
    manifest.write(man, recs + extra)
    out = tmp_path / "masked"
    m = _run(mask_params(), (man, crops, raw), out)
    assert m["kept"] == 2 and m["rejected"] == 3
    rejects = manifest.read_by_id(out / "rejects.jsonl")
    assert rejects["blank"]["reason"] == "mask_too_small"
    assert rejects["corrupt"]["reason"] in ("corrupt", "not_an_image")
    assert rejects["gone"]["reason"] == "missing"
    assert m["rejected_by_reason"]["mask_too_small"] == 1
    assert not (out / "images" / "blank.png").exists()


def test_none_passes_crops_through(tmp_path):
    src = write_source(tmp_path / "src", n=2)
    out = tmp_path / "masked"
    m = _run(mask_params(method="none"), src, out)
    assert m["kept"] == 2 and m["mask_area_mean"] == 1.0
    assert m["iou_mean"] < 0.5  # the baseline a masker has to beat
    r = manifest.read(out / "manifest.jsonl")[0]
    assert (np.asarray(Image.open(out / r["file"])) ==
            np.asarray(Image.open(src[1] / r["crop_file"]))).all()


# --------------------------------------------------------------------------- rembg
def test_rembg_custom_model_one_session(tmp_path, rembg_home, tiny_onnx, monkeypatch):
    import rembg

    created = []
    real = rembg.new_session
    monkeypatch.setattr(rembg, "new_session",
                        lambda *a, **k: created.append(a) or real(*a, **k))
    src = write_source(tmp_path / "src", n=4)
    out = tmp_path / "masked"
    p = mask_params(method="rembg", model_path=str(tiny_onnx), background="gray")
    m = _run(p, src, out)
    assert created == [("u2net_custom",)]  # one session, reused for every crop
    assert m["method"] == "rembg" and m["model"] == "darkness.onnx" and m["kept"] == 4
    assert m["iou_mean"] >= 0.5, m  # "dark is spider" separates these pictures
    placed = list((rembg_home / "custom").iterdir())
    assert len(placed) == 1 and placed[0].name.endswith("-darkness.onnx")
    assert placed[0].read_bytes() == tiny_onnx.read_bytes()
    assert _net_attempts() == ""


def test_rembg_masks_follow_session_and_area_limits(tmp_path, rembg_home, tiny_onnx):
    """Full and empty masks from a real session are dropped; post-processing runs."""
    session = mask_rembg.open_rembg_session(mask_params(model_path=str(tiny_onnx)))
    crops = tmp_path / "crops"
    (crops / "images").mkdir(parents=True)
    dark = np.full((96, 96, 3), 15, np.uint8)
    dark[40:44, 40:44] = 250  # a bright speck: nearly everything is "dark spider"
    light = np.full((96, 96, 3), 240, np.uint8)
    light[40:43, 40:43] = 5  # a dark speck: nearly nothing is
    img, _ = spider_crop(5, size=96)
    for name, a in (("full", dark), ("empty", light), ("ok", np.asarray(img))):
        Image.fromarray(a).save(crops / "images" / f"{name}.png")
    recs = [{"id": n, "file": f"images/{n}.png", "image_id": n, "size": 96}
            for n in ("full", "empty", "ok")]
    manifest.write(crops / "manifest.jsonl", recs)
    p = mask_params(method="rembg", model_path=str(tiny_onnx), post_process=True)
    masker = mask_rembg.RembgMasker(p, session=session)
    m = mask_stage.run(p, seed=0, manifest_path=crops / "manifest.jsonl", images_root=crops,
                    out=tmp_path / "masked", raw_root=None, metrics_path=None, plots_dir=None,
                    masker=masker)
    rejects = manifest.read_by_id(tmp_path / "masked" / "rejects.jsonl")
    assert rejects["full"]["reason"] == "mask_too_large"
    assert rejects["empty"]["reason"] == "mask_too_small"
    assert m["kept"] == 1 and "iou_mean" not in m


def test_missing_weights_fail_fast_and_leave_nothing(tmp_path, rembg_home):
    out = tmp_path / "masked"
    src = write_source(tmp_path / "src", n=1)
    for model, fname in (("u2net", "u2net.onnx"), ("isnet-general-use", "isnet-general-use.onnx"),
                         ("birefnet-general", "birefnet-general.onnx")):
        t = time.perf_counter()
        with pytest.raises(mask_rembg.MissingWeights) as e:
            _run(mask_params(method="rembg", model=model), src, out)
        assert time.perf_counter() - t < 5
        msg = str(e.value)
        assert fname in msg and "curl -L -o" in msg and e.value.file.name == fname
        assert e.value.url.startswith("https://github.com/danielgatis/rembg/releases/")
        assert e.value.file.parent == rembg_home / "models" / model
    assert list(rembg_home.iterdir()) == []  # rembg/pooch would leave models/<name>/ behind
    assert not out.exists()
    assert _net_attempts() == ""

    # a file placed where the message says is found
    want = rembg_home / "models" / "u2net" / "u2net.onnx"
    want.parent.mkdir(parents=True)
    want.write_bytes(b"weights")
    assert mask_rembg.rembg_weights("u2net") == want


def test_unusable_models_and_paths_are_named(tmp_path, rembg_home):
    with pytest.raises(mask_base.MaskError, match="u2netp"):
        mask_rembg.rembg_weights("u2nett")
    with pytest.raises(mask_base.MaskError, match="model_path"):
        mask_rembg.rembg_weights("u2net_custom")
    with pytest.raises(mask_base.MaskError, match="no such file"):
        mask_rembg.place_custom_model(tmp_path / "nope.onnx")


def test_cli_reports_missing_weights(tmp_path, rembg_home, capsys):
    from spidergan import cli

    man, crops, raw = write_source(tmp_path / "src", n=1)
    pfile = tmp_path / "params.yaml"
    pfile.write_text("mask:\n  method: rembg\n  model: silueta\n")
    rc = cli.main(["--params", str(pfile), "mask", "--manifest", str(man), "--images", str(crops),
                   "--raw", str(raw), "--out", str(tmp_path / "masked"),
                   "--metrics", str(tmp_path / "m.json"), "--plots", str(tmp_path / "plots")])
    err = capsys.readouterr().err
    assert rc == 1 and "silueta.onnx" in err and "curl -L -o" in err


def test_params_are_checked():
    with pytest.raises(params.ParamsError, match="min_area"):
        mask_params(min_area=0.9, max_area=0.5)
    with pytest.raises(params.ParamsError, match="mask.background"):
        mask_params(background="purple")
    with pytest.raises(params.ParamsError, match="did you mean mask.grabcut.iterations"):
        mask_params(grabcut={"iteration": 3})
    with pytest.raises(params.ParamsError, match="mask.grabcut.median must be odd"):
        mask_params(grabcut={"median": 4})
    with pytest.raises(params.ParamsError, match="mask.grabcut.colour"):
        mask_params(grabcut={"colour": "hsv"})
    with pytest.raises(params.ParamsError, match="mask.grabcut.shadow"):
        mask_params(grabcut={"shadow": [0.5, 1.2]})
    with pytest.raises(params.ParamsError, match="mask.grabcut.smoothness"):
        mask_params(grabcut={"smoothness": -1.0})


def test_rembg_alpha_matting_gives_foreground(rembg_home, tiny_onnx):
    p = mask_params(method="rembg", model_path=str(tiny_onnx), alpha_matting=True)
    img, truth = spider_crop(2, size=96)
    alpha, fg = mask_rembg.RembgMasker(p)(img, {})
    assert fg is not None and fg.size == img.size
    assert mask_stage.iou(alpha >= 128, truth) >= 0.7


def test_stage_script_runs_in_a_project(tmp_path):
    """stages/mask.py reads data/unique/manifest.jsonl with files under data/crops."""
    import shutil
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    man, crops, raw = write_source(tmp_path / "data", n=2)
    (tmp_path / "data" / "unique").mkdir()
    shutil.move(man, tmp_path / "data" / "unique" / "manifest.jsonl")
    shutil.copy(root / "params.yaml", tmp_path / "params.yaml")
    e = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    e.pop("SPIDERGAN_ROOT", None)
    subprocess.run([sys.executable, str(root / "stages" / "mask.py")], cwd=tmp_path, env=e,
                   check=True, capture_output=True, timeout=120)
    m = json.loads((tmp_path / "metrics" / "mask.json").read_text())
    assert m["kept"] == 2 and m["iou_mean"] >= 0.7
    assert (tmp_path / "plots" / "mask" / "contact_sheet.png").exists()
    assert len(list((tmp_path / "data" / "masked" / "alpha").iterdir())) == 2


def test_rerun_after_a_kill_leaves_nothing_stale(tmp_path):
    """No resume (DVC empties data/masked before the stage runs): a run into a folder a killed
    run left behind, with a half-written line and a crop no longer in the input, gives exactly
    what a run into an empty folder gives."""
    src = write_source(tmp_path / "src", n=3)
    out, clean = tmp_path / "masked", tmp_path / "clean"
    m = _run(mask_params(), src, clean)
    (out / "images").mkdir(parents=True)
    (out / "manifest.jsonl").write_text('{"id": "gone", "file": "images/gone.png"}\n{"id": "sy')
    (out / "images" / "gone.png").write_bytes(b"stale")
    assert _run(mask_params(), src, out) == m
    assert (out / "manifest.jsonl").read_bytes() == (clean / "manifest.jsonl").read_bytes()
    assert sorted(f.name for f in (out / "images").iterdir()) == \
        sorted(f.name for f in (clean / "images").iterdir())
