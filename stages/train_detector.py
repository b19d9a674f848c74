"""DVC stage `train_detector`: labels (+ reviewed self-training) -> models/detector.pt + metrics."""

from spidergan import env, params
from spidergan.detect import train

if __name__ == "__main__":
    env.setup()
    p = params.load()
    train.run(p.detect, source=p.scrape.source, seed=p.seed, raw_dir="data/raw",
              labels_dir="data/labels", decisions="data/review/decisions.jsonl",
              out_model="models/detector.pt", out_dir="data/detector",
              metrics_path="metrics/train_detector.json")
