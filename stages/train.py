"""DVC stage `train`: params.train + data/dataset -> models/gan/ (checkpoint), plots/train/ (logs)."""

from spidergan import env, params
from spidergan.gan import train

if __name__ == "__main__":
    env.setup()
    p = params.load()
    train.run(p.train, seed=p.seed, dataset="data/dataset", out="models/gan",
              live_dir="plots/train", metrics_path="metrics/train.json")
