"""DVC stage `dedup`: data/crops -> data/unique/ (one crop per near-duplicate group)."""

from spidergan import dedup, env, params

if __name__ == "__main__":
    env.setup()
    p = params.load()
    dedup.run(p.dedup, crops="data/crops", out="data/unique", metrics_path="metrics/dedup.json",
              plots_dir="plots/dedup")
