"""The detector as the other modules use it: loading weights (the one YOLO loader), the
device, resolving `detect.model`, and `Detector`, which predicts boxes the way the detect stage
records them (sorted by confidence, nested boxes suppressed).

Training (`train`), the stage (`predict`), quality (`quality`), self-training (`selftrain`) and
evaluate's detector_rate all import from here, and this module imports none of them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from spidergan import device, env
from spidergan.boxes import ioa
from spidergan.params import DetectParams

WEIGHTS_HELP = (
    "Nothing is downloaded at run time. To fine-tune pretrained weights (recommended when you "
    "have internet once), download them beforehand, e.g.\n"
    "  curl -L -o models/yolo11n.pt "
    "https://github.com/ultralytics/assets/releases/download/v8.3.0/yolo11n.pt\n"
    "and set detect.model: models/yolo11n.pt; or train from scratch with a model YAML such as "
    "detect.model: yolo11n.yaml.")


# model YAMLs of our own, e.g. the committed yolo11-tiny-p45.yaml
CONFIGS = Path(__file__).parent / "configs"


class DetectorError(RuntimeError):
    for_people = True  # printed without a traceback (spidergan.outcome)


class DetectorMissing(DetectorError, FileNotFoundError):
    """No weights file where the detector should be."""


# --------------------------------------------------------------------------- model + device
def resolve_model(name: str, root: str | Path | None = None) -> str:
    """The model source to hand to Ultralytics, or raise with a clear message.

    A `.pt` must exist locally (relative to the project root or absolute): Ultralytics would
    otherwise try to download a name like `yolo11n.pt` from GitHub. A `.yaml` is taken from the
    project if such a file exists, else from our own configs (`spidergan/detect/configs/`), else
    from Ultralytics' bundled model configs.
    """
    root = Path(root) if root else env.project_root()
    p = Path(name)
    cand = p if p.is_absolute() else root / p
    if name.endswith(".pt"):
        if not cand.is_file():
            raise DetectorError(f"detect.model: weight file not found: {cand}\n{WEIGHTS_HELP}")
        return str(cand)
    if name.endswith((".yaml", ".yml")):
        if cand.is_file():
            return str(cand)
        ours = CONFIGS / name
        if not p.is_absolute() and ours.is_file():
            return str(ours)
        env.configure_ultralytics()
        from ultralytics.nn.tasks import yaml_model_load

        try:
            yaml_model_load(name)  # resolves scale names: yolo11n.yaml is yolo11.yaml at scale n
        except (FileNotFoundError, AssertionError) as e:
            raise DetectorError(f"detect.model: model YAML {name!r} is neither a file in the "
                                f"project nor an Ultralytics model config ({e})") from None
        return name
    raise DetectorError(f"detect.model: {name!r} must be a model YAML (from scratch) or a .pt file")


def load_yolo(weights: str | Path, threads: int | None = None):
    """Ultralytics' YOLO on local weights (never a download); `threads` as
    `env.configure_ultralytics` takes it."""
    weights = Path(weights)
    if not weights.is_file():
        raise DetectorMissing(f"detector weights not found: {weights} "
                              "(run the train_detector stage first: dvc repro train_detector)")
    env.configure_ultralytics(threads)
    from ultralytics import YOLO

    return YOLO(str(weights), task="detect")


class Detector:
    """A loaded YOLO detector predicting boxes on decoded RGB images."""

    def __init__(self, weights: str | Path, p: DetectParams, conf: float | None = None):
        self.model = load_yolo(weights, p.threads)
        self.kw = dict(imgsz=p.imgsz, conf=p.conf if conf is None else conf, iou=p.iou,
                       max_det=p.max_det, augment=p.augment, device=device.ultralytics_arg(p.device),
                       verbose=False)
        self.nested = p.nested_suppress

    def predict(self, rgbs: list[np.ndarray], **kw) -> list[list[dict]]:
        """Boxes per image. Images of one shape go through as one batch; mixed shapes would be
        padded to a square, which costs more than it saves on CPU. `kw` overrides the predict
        settings (conf, imgsz, device) for this call."""
        kw = {**self.kw, **kw}
        out: list = [None] * len(rgbs)
        groups: dict = {}
        for k, a in enumerate(rgbs):
            groups.setdefault(a.shape, []).append(k)
        import cv2  # an Ultralytics dependency

        for ks in groups.values():
            # cv2 swaps channels ~10x faster than a numpy negative-stride copy
            bgr = [cv2.cvtColor(rgbs[k], cv2.COLOR_RGB2BGR) for k in ks]
            for k, res in zip(ks, self.model.predict(bgr, **kw)):
                out[k] = suppress_nested(boxes_of(res), self.nested)
        return out


def suppress_nested(boxes: list[dict], threshold: float) -> list[dict]:
    """Drop a box that lies mostly (>= threshold of the smaller box) inside or around a more
    confident one: NMS keeps an "inner" and an "outer" spider because their IoU is low, but one
    spider gets one box. `boxes` is sorted by confidence; threshold > 1 disables this."""
    if threshold > 1:
        return boxes
    kept: list[dict] = []
    for b in boxes:
        if all(ioa(b["box"], k["box"]) < threshold for k in kept):
            kept.append(b)
    return kept


def boxes_of(res) -> list[dict]:
    b = res.boxes
    xyxy = b.xyxy.cpu().numpy().tolist()
    conf = b.conf.cpu().numpy().tolist()
    order = sorted(range(len(conf)), key=lambda i: -conf[i])
    return [{"box": [round(float(v), 2) for v in xyxy[i]], "conf": round(float(conf[i]), 4),
             "cls": 0} for i in order]
