"""DVC stage `scrape`: params.scrape -> data/raw/ (images, manifest, ground truth)."""

from spidergan import env, params, scrape

if __name__ == "__main__":
    env.setup()
    p = params.load()
    scrape.run(p.scrape, seed=p.seed, out="data/raw", metrics_path="metrics/scrape.json")
