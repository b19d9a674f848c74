"""DVC stage `train`: params.train + data/dataset -> models/gan/ (checkpoint), plots/train/ (logs)."""

from spidergan import env, params, sweep
from spidergan.gan import train

if __name__ == "__main__":
    env.setup()
    p = params.load()
    # a queued experiment whose worker was killed resumes from the checkpoint it left behind
    seed = params.train_seed(p.train, p.seed)
    sweep.adopt_checkpoint(p.train, seed, "data/dataset", "models/gan")
    train.run(p.train, seed=seed, dataset="data/dataset", out="models/gan",
              live_dir="plots/train", metrics_path="metrics/train.json")
