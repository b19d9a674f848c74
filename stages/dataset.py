"""DVC stage `dataset`: params.dataset -> data/dataset/ (packed training images + held-out reals)."""

from spidergan import env, params
from spidergan.gan import dataset

if __name__ == "__main__":
    env.setup()
    p = params.load()
    dataset.run(p.dataset, resolution=p.train.resolution, seed=p.seed,
                inputs={"masked": ("data/masked/manifest.jsonl", "data/masked"),
                        "unique": ("data/unique/manifest.jsonl", "data/crops")},
                out="data/dataset", metrics_path="metrics/dataset.json")
