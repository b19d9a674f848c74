"""Share of images in which the project's own spider detector finds a spider.

Catches fakes that score well on distribution metrics but are not spiders (the original run's
caterpillar-like blobs). Measured on the generated images and, for reference, on real training
images at the same resolution: the real rate is the ceiling the fakes can be compared with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from spidergan import env


class DetectorMissing(FileNotFoundError):
    pass


def load_detector(path: str | Path):
    path = Path(path)
    if not path.is_file():
        raise DetectorMissing(f"no detector at {path}: run the train_detector stage "
                              f"(`dvc repro train_detector`) to measure detector_rate")
    env.configure_ultralytics()
    from ultralytics import YOLO

    return YOLO(str(path), task="detect")


def spider_classes(model) -> list[int] | None:
    """Class ids named 'spider' (None = every class, for a detector without that name)."""
    names = getattr(model, "names", None) or {}
    ids = [int(i) for i, n in names.items() if str(n).lower() == "spider"]
    return ids or None


def found(model, images: Sequence[np.ndarray], conf: float, imgsz: int = 320, batch: int = 32,
          device: str | None = None) -> np.ndarray:
    """Per image (uint8 HWC RGB): does the detector find a spider at confidence >= conf?"""
    classes = spider_classes(model)
    hits = []
    for i in range(0, len(images), batch):
        # PIL in RGB: ultralytics takes numpy arrays as BGR, PIL images as RGB
        chunk = [Image.fromarray(np.asarray(a)).resize((imgsz, imgsz), Image.BICUBIC)
                 for a in images[i:i + batch]]
        kw = {"device": device} if device else {}
        results = model.predict(chunk, conf=max(float(conf), 1e-6), imgsz=imgsz, classes=classes,
                                verbose=False, **kw)
        for r in results:
            c = r.boxes.conf.cpu().numpy() if r.boxes is not None else np.zeros(0)
            hits.append(bool((c >= conf).any()))
    return np.asarray(hits, dtype=bool)


def rate(model, images: Sequence[np.ndarray], conf: float, **kw) -> float:
    if len(images) == 0:
        raise ValueError("detector_rate needs at least one image")
    return float(found(model, images, conf, **kw).mean())
