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


def main(n: int = 100, seed: int = 0, rounds: int = 3) -> None:
    cv2.setNumThreads(1)
    try:
        import torch
        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass
    p = SyntheticParams(count=n)
    list(synthetic.generate(SyntheticParams(count=2), seed + 1))   # warm-up: noise tiles, imports
    # best of several rounds (the usual way to time on a shared machine); CPU time as well,
    # which other processes on the same cores disturb much less than wall-clock time
    walls, cpus = [], []
    for _ in range(rounds):
        t0, c0 = time.perf_counter(), time.process_time()
        items = list(synthetic.generate(p, seed))
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    rate = len(items) / min(walls)
    cpu_rate = len(items) / min(cpus)

    decoded = [(cv2.imdecode(np.frombuffer(it.jpeg, np.uint8), cv2.IMREAD_COLOR), 85) for it in items]
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for img, q in decoded:
            cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, q])
        best = min(best, time.perf_counter() - t0)
    base = len(decoded) / best

    px = np.mean([it.size[0] * it.size[1] for it in items])
    dups = sum(it.dup_of is not None for it in items)
    print(f"{n} images, mean {px / 1000:.0f} kpx, {dups} planted duplicates")
    print(f"synthetic: {rate:.1f} img/s on 1 core ({1000 / rate:.1f} ms/img; goal {GOAL:.0f}, "
          f"ratio {rate / GOAL:.2f}x); jpeg-encode-only baseline {base:.0f} img/s "
          f"(drawing is {100 * (1 - rate / base):.0f}% of the time)")
    print(f"synthetic by CPU time: {cpu_rate:.1f} img/s ({1000 / cpu_rate:.1f} ms/img; "
          f"ratio to goal {cpu_rate / GOAL:.2f}x)")


if __name__ == "__main__":
    main()
