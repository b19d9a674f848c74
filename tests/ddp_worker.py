"""One training process for tests/test_gan_ddp.py, run directly (one process) or under torchrun.

argv[1]: JSON {"params": TrainParams fields, "seed", "dataset", "out", "no_noise"}.
`no_noise` switches off G's per-pixel noise inputs, the one per-sample randomness each rank
draws from its own stream, so one process and two see exactly the same random numbers.
"""

import json
import os
import sys

import torch

from spidergan import env
from spidergan.gan import train
from spidergan.params import TrainParams


def main() -> None:
    env.setup()
    torch.set_num_threads(1)
    cfg = json.loads(sys.argv[1])
    if cfg.get("no_noise"):
        build = train.build_networks

        def quiet(p, device):
            G, D = build(p, device)
            for m in G.modules():
                if hasattr(m, "use_noise"):
                    m.use_noise = False
            return G, D

        train.build_networks = quiet
    if cfg.get("ada_signs"):
        # D's verdicts on the reals, by index in the global batch: rank r sees r, r + world, ...
        from spidergan.gan.augment import AdaController

        world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
        signs = torch.tensor(cfg["ada_signs"], dtype=torch.float32)[rank::world]
        accumulate = AdaController.accumulate
        AdaController.accumulate = lambda self, logits: accumulate(
            self, signs.reshape(logits.shape).to(logits))
    result = train.run(TrainParams(**cfg["params"]), cfg["seed"], dataset=cfg["dataset"],
                       out=cfg["out"], live_dir=None, metrics_path=None, progress=False)
    print("RESULT", json.dumps(result))


if __name__ == "__main__":
    main()
