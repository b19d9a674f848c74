"""Augmentation throughput: AugmentPipe("bgc") at p=0.5 against the same pipe at p=0.

64 px, batch 32, CPU, one thread, forward + backward (D's loss backpropagates through the
pipe to G for fakes). The p=0 baseline runs the same code path (p stays a device tensor, so
forward does not branch on it) and shows what the pipe costs when nothing fires; the plain
`x * 1` line is the floor of a graph with no augmentation at all.
"""

from __future__ import annotations

import time

import torch

from spidergan.gan.augment import AugmentPipe


def throughput(fn, x, seconds=2.0) -> float:
    for _ in range(3):
        fn(x)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn(x)
        n += x.shape[0]
    return n / (time.perf_counter() - t0)


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    x = (torch.rand(32, 3, 64, 64) * 2 - 1).requires_grad_(True)

    def run(pipe):
        def f(images):
            pipe(images).square().mean().backward()
        return f

    rates = {
        "bgc p=0.5": throughput(run(AugmentPipe("bgc", p=0.5)), x),
        "bgc p=0 (identity)": throughput(run(AugmentPipe("bgc", p=0.0)), x),
        "bgcc p=0.5": throughput(run(AugmentPipe("bgcc", p=0.5)), x),
        "no pipe (x * 1)": throughput(lambda i: (i * 1).square().mean().backward(), x),
    }
    base = rates["bgc p=0 (identity)"]
    for name, r in rates.items():
        print(f"{name:>20}: {r:8.0f} img/s  ratio to p=0 {r / base:5.2f}x")
    print(f"ours (bgc, p=0.5) {rates['bgc p=0.5']:.0f} img/s, baseline (p=0) {base:.0f} img/s, "
          f"ratio {rates['bgc p=0.5'] / base:.2f}x")


if __name__ == "__main__":
    main()
