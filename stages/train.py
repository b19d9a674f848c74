"""DVC stage `train`: params.train + data/dataset -> models/gan/ (checkpoint), plots/train/ (logs)."""

from spidergan import env, params, sweep
from spidergan.gan import train

if __name__ == "__main__":
    env.setup()
    p = params.load()
    # a queued experiment whose worker was killed resumes from the checkpoint it left behind
    sweep.adopt_checkpoint(p.train, params.train_seed(p), "data/dataset", "models/gan")
    train.run(p.train, seed=params.train_seed(p), dataset="data/dataset", out="models/gan",
              live_dir="plots/train", metrics_path="metrics/train.json")
