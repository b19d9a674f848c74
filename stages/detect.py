"""DVC stage `detect`: models/detector.pt over data/raw -> data/detections.jsonl (+ quality)."""

from spidergan import env, params
from spidergan.detect import predict

if __name__ == "__main__":
    env.setup()
    p = params.load()
    predict.run(p.detect, raw_dir="data/raw", model_path="models/detector.pt",
                out="data/detections.jsonl", labels_path="data/detector/labels.jsonl",
                metrics_path="metrics/detect.json", failures_png="plots/detect/failures.png")
