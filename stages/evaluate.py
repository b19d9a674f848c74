"""DVC stage `evaluate`: models/gan + data/dataset -> metrics/evaluate.json, plots, report."""

from spidergan import env, evaluate, params

if __name__ == "__main__":
    env.setup()
    p = params.load()
    evaluate.run(p.evaluate, seed=p.seed, dataset="data/dataset", gan="models/gan",
                 detector="models/detector.pt", out="data/eval", plots="plots/evaluate",
                 report_path="reports/evaluate.html", metrics_path="metrics/evaluate.json",
                 notes_path="reports/evaluate_notes.json", detect=p.detect)
