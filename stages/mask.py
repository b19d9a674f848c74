"""DVC stage `mask`: deduplicated crops -> data/masked/ (composites, alpha masks, manifest)."""

from spidergan import env, params
from spidergan.mask import stage

if __name__ == "__main__":
    env.setup()
    p = params.load()
    stage.run(p.mask, seed=p.seed, manifest_path="data/unique/manifest.jsonl",
              images_root="data/crops", out="data/masked", raw_root="data/raw",
              metrics_path="metrics/mask.json", plots_dir="plots/mask")
