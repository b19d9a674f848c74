"""DVC stage `crop`: data/raw (+ detections or ground truth) -> data/crops/ (square PNG crops)."""

from spidergan import crop, env, params

if __name__ == "__main__":
    env.setup()
    p = params.load()
    crop.run(p.crop, raw="data/raw", out="data/crops", detections_path="data/detections.jsonl",
             decisions_path="data/review/decisions.jsonl", metrics_path="metrics/crop.json")
