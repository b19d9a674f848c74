"""Synthetic source throughput on one core, against the 50 img/s goal and a same-run baseline.

The baseline is the cost of only JPEG-encoding already drawn images of the same sizes and
qualities: what the source would cost if drawing were free. The gap between the two is the
share of the time spent drawing.
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from spidergan.params import SyntheticParams  # noqa: E402
from spidergan.sources import synthetic  # noqa: E402

GOAL = 50.0


def main(n: int = 200, seed: int = 0) -> None:
    cv2.setNumThreads(1)
    try:
        import torch
        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass
    p = SyntheticParams(count=n)
    list(synthetic.generate(SyntheticParams(count=2), seed + 1))   # warm-up: noise tiles, imports
    t0 = time.perf_counter()
    items = list(synthetic.generate(p, seed))
    dt = time.perf_counter() - t0
    rate = len(items) / dt

    decoded = [(cv2.imdecode(np.frombuffer(it.jpeg, np.uint8), cv2.IMREAD_COLOR), 85) for it in items]
    t0 = time.perf_counter()
    for img, q in decoded:
        cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, q])
    base = len(decoded) / (time.perf_counter() - t0)

    px = np.mean([it.size[0] * it.size[1] for it in items])
    dups = sum(it.dup_of is not None for it in items)
    print(f"{n} images, mean {px / 1000:.0f} kpx, {dups} planted duplicates")
    print(f"synthetic: {rate:.1f} img/s on 1 core ({1000 / rate:.1f} ms/img; goal {GOAL:.0f}, "
          f"ratio {rate / GOAL:.2f}x); jpeg-encode-only baseline {base:.0f} img/s "
          f"(drawing is {100 * (1 - rate / base):.0f}% of the time)")


if __name__ == "__main__":
    main()
