"""Share of images in which the project's own spider detector finds a spider.

Catches fakes that score well on distribution metrics but are not spiders (the original run's
caterpillar-like blobs). Measured on the generated images and, for reference, on real training
images at the same resolution: the real rate is the ceiling the fakes can be compared with.

Through the detect stage's own `Detector` (same loader, NMS and nested-box suppression); an
image counts when at least one box reaches the confidence, which suppression never changes
(the most confident box is always kept).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from spidergan.detect.model import Detector, DetectorMissing  # noqa: F401 (evaluate catches it)
from spidergan.params import DetectParams


def load_detector(path: str | Path, detect: DetectParams, threads: int = 0) -> Detector:
    """The detector at `path`, predicting as the detect stage does (`detect`: test-time
    augmentation, NMS IoU, max boxes, nested-box suppression); raises DetectorMissing when there
    is none. Conf and image size come with each `rate` call; `threads`: torch CPU threads,
    0 = every core."""
    try:
        # only the predict settings: the training keys (epochs, imgsz...) do not matter here
        return Detector(path, DetectParams(augment=detect.augment, iou=detect.iou, max_det=detect.max_det,
                                           nested_suppress=detect.nested_suppress, threads=threads))
    except DetectorMissing as e:
        raise DetectorMissing(f"{e}; it measures detector_rate") from None


def found(detector: Detector, images: Sequence[np.ndarray], conf: float, imgsz: int = 320,
          batch: int = 32, device: str | None = None) -> np.ndarray:
    """Per image (uint8 HWC RGB): does the detector find a spider at confidence >= conf?"""
    kw = {"conf": max(float(conf), 1e-6), "imgsz": imgsz, **({"device": device} if device else {})}
    hits = []
    for i in range(0, len(images), batch):
        # fakes are tiny: upscaled here with PIL's bicubic, so the detector sees imgsz pixels
        chunk = [np.asarray(Image.fromarray(np.asarray(a)).resize((imgsz, imgsz), Image.BICUBIC))
                 for a in images[i:i + batch]]
        hits += [bool(boxes) for boxes in detector.predict(chunk, **kw)]  # all above conf
    return np.asarray(hits, dtype=bool)


def rate(detector: Detector, images: Sequence[np.ndarray], conf: float, **kw) -> float:
    if len(images) == 0:
        raise ValueError("detector_rate needs at least one image")
    return float(found(detector, images, conf, **kw).mean())
