"""Compare DVC experiments: quality and memorization against the swept params, spread over seeds.

Input is what `dvc exp show --json` prints (the experiments of the current commit) and, per
experiment, its `plots/evaluate/snapshots.json` (read from the experiment's git commit: DVC
commits `cache: false` plots with the experiment). Output:

* `<plots>/compare.png`: one panel per (metric, swept param): the metric's mean over seeds at
  each value of the param, error bar = standard deviation over seeds, every seed as a dot, one
  line per combination of the other swept params; the best point is a star.
* `<plots>/curves.png`: the metrics per training snapshot (`evaluate.snapshots`), one line per
  experiment, coloured by point.
* `<out>/index.html` (offline, pictures inlined), `<out>/table.md`, `<out>/points.csv` (one row
  per point, mean and sd of each metric), `<out>/runs.csv` (one row per experiment),
  `<out>/compare.json` (numbers per point and the index of the best one).

A "point" is one combination of the swept params; the experiments of a point differ only in
their seed keys (`seed`, `train.seed`), which make the spread. Swept params are the params
whose values differ between the experiments. Words: for each swept param and metric, the change
of the mean from its first to its last value (averaged over the other params), called "within
seed noise" when it is smaller than twice its standard error from the seed spread.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import math
import os
from pathlib import Path
from typing import Callable, Sequence

from spidergan import atomic
from spidergan.experiments import (  # noqa: F401 (the CLI's names: compare.dvc_exp_show, ...)
    METRICS_FILE, ExperimentsError, Run, attach_curves, dvc_exp_show, git_reader, runs_from_show,
)

log = logging.getLogger(__name__)

SEED_KEYS = ("seed", "train.seed")

# Quality: the first present of QUALITY_PRIMARY ranks the points (FID needs Inception weights;
# offline the weight-free SWD stands in). +1: higher is better, -1: lower is better.
QUALITY = {"fid": -1, "kid_mean": -1, "swd": -1, "precision": +1, "recall": +1}
QUALITY_PRIMARY = ("fid", "kid_mean", "swd")
# Memorization: +1 means a higher value is LESS copying. memorization_rate: share of fakes within
# the hash threshold of a training image; copy_ratio: fake->train over held-out->train distance
# (< 1 = closer to training than new photos are); authenticity: share of fakes farther from
# their nearest training image than it is from its own neighbour; C_T (Meehan et al. 2020):
# z-score, clearly negative = data copying.
MEMORIZATION = {"memorization_rate": -1, "ct": +1, "c_t": +1, "C_T": +1, "copy_ratio": +1,
                "authenticity": +1}
DERIVED = ("views_per_image",)  # kimg * 1000 / num_train: how often each photo was shown


class CompareError(RuntimeError):
    """Nothing to compare; the message says why, with counts."""



@dataclasses.dataclass
class Point:
    key: tuple              # values of the swept params, in `swept` order
    runs: list

    def values(self, metric: str) -> list[float]:
        return [r.metrics[metric] for r in self.runs if metric in r.metrics]

    def mean(self, metric: str) -> float | None:
        v = self.values(metric)
        return sum(v) / len(v) if v else None

    def sd(self, metric: str) -> float | None:
        """Sample standard deviation over the point's runs (seeds); None with fewer than 2."""
        v = self.values(metric)
        if len(v) < 2:
            return None
        m = sum(v) / len(v)
        return math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1))


@dataclasses.dataclass
class Effect:
    param: str
    metric: str
    levels: list            # param values, first .. last
    means: list             # metric mean per level (mean of the point means at that level)
    delta: float            # last - first
    se: float | None        # standard error of delta from the pooled seed spread
    noise: bool | None      # |delta| < 2 se; None when there is no seed repeat
    start_delta: float | None = None  # the same change at the first training snapshot

    def sentence(self) -> str:
        text = self._sentence()
        s = self.start_delta
        if (s is not None and not self.noise and self.delta != 0 and s * self.delta > 0
                and abs(s) >= 0.5 * abs(self.delta)):
            text += (f" (but {s:+.3g} of it is there at the first snapshot already: the data or "
                     f"the measure, not training)")
        return text

    def _sentence(self) -> str:
        d = QUALITY.get(self.metric) or MEMORIZATION.get(self.metric)
        a, b = self.means[0], self.means[-1]
        text = (f"{self.param} {_fmt(self.levels[0])} -> {_fmt(self.levels[-1])}: "
                f"{self.metric} {_fmt(a)} -> {_fmt(b)} ({self.delta:+.3g}")
        text += f", +-{2 * self.se:.2g} from seeds)" if self.se is not None else ", no seed repeats)"
        if self.delta == 0:
            return text + ": no change"
        if self.noise:
            return text + ": within seed noise"
        if d is None:
            return text
        good = (self.delta > 0) == (d > 0)
        if self.metric in MEMORIZATION:
            return text + (": less copying" if good else ": MORE copying")
        return text + (": better" if good else ": worse")


# --------------------------------------------------------------------------- analysis
def _sortable(v):
    return (0, v, "") if isinstance(v, (int, float)) and not isinstance(v, bool) else (1, 0, str(v))


def swept_params(runs: Sequence[Run], seed_keys: Sequence[str] = SEED_KEYS) -> list[str]:
    keys = sorted({k for r in runs for k in r.params})
    return [k for k in keys if k not in seed_keys
            and len({json.dumps(r.params.get(k), sort_keys=True) for r in runs}) > 1]


def group(runs: Sequence[Run], swept: Sequence[str]) -> list[Point]:
    points: dict[tuple, Point] = {}
    for r in runs:
        key = tuple(r.params.get(k) for k in swept)
        points.setdefault(key, Point(key=key, runs=[])).runs.append(r)
    return sorted(points.values(), key=lambda p: tuple(_sortable(v) for v in p.key))


def metric_keys(runs: Sequence[Run]) -> tuple[list[str], list[str]]:
    """(quality keys, memorization keys) present in every run, primary quality key first."""
    common = set.intersection(*(set(r.metrics) for r in runs)) if runs else set()
    quality = [k for k in QUALITY if k in common]
    primary = next((k for k in QUALITY_PRIMARY if k in common), None)
    if primary:
        quality.remove(primary)
        quality.insert(0, primary)
    return quality, [k for k in MEMORIZATION if k in common]


def pooled_sd(points: Sequence[Point], metric: str) -> float | None:
    """Within-point (seed) standard deviation pooled over the points with repeats."""
    ss, dof = 0.0, 0
    for p in points:
        v = p.values(metric)
        if len(v) >= 2:
            m = sum(v) / len(v)
            ss += sum((x - m) ** 2 for x in v)
            dof += len(v) - 1
    return math.sqrt(ss / dof) if dof else None


def effects(points: Sequence[Point], swept: Sequence[str], metrics: Sequence[str]) -> list[Effect]:
    out = []
    for i, param in enumerate(swept):
        levels = sorted({p.key[i] for p in points}, key=_sortable)
        if len(levels) < 2:
            continue
        for metric in metrics:
            s = pooled_sd(points, metric)
            means, counts = [], []
            for lv in levels:
                at = [p for p in points if p.key[i] == lv and p.mean(metric) is not None]
                means.append(sum(p.mean(metric) for p in at) / len(at) if at else float("nan"))
                # runs behind the level mean: var(mean of point means) = s^2 / len(at)^2 * sum(1/n)
                counts.append(len(at) ** 2 / sum(1 / len(p.values(metric)) for p in at) if at else 0)
            delta = means[-1] - means[0]
            se = (s * math.sqrt(1 / counts[0] + 1 / counts[-1])
                  if s is not None and counts[0] and counts[-1] else None)
            out.append(Effect(param, metric, levels, means, delta, se,
                              None if se is None else abs(delta) < 2 * se,
                              _start_delta(points, i, levels, metric)))
    return out


def _start_delta(points, i, levels, metric) -> float | None:
    """Last-minus-first level change of `metric` at each run's first snapshot (curves), None
    unless every run has one."""
    firsts = {}
    for p in points:
        vals = []
        for r in p.runs:
            row = min(r.curve, key=lambda row: row["kimg"]) if r.curve else None
            if row is None or metric not in row:
                return None
            vals.append(row[metric])
        firsts[id(p)] = sum(vals) / len(vals)
    ends = []
    for lv in (levels[0], levels[-1]):
        at = [firsts[id(p)] for p in points if p.key[i] == lv]
        ends.append(sum(at) / len(at))
    return ends[1] - ends[0]


def best_point(points: Sequence[Point], primary: str | None,
               max_memorization: float | None = None) -> tuple[int | None, str]:
    """Index of the best point by the primary quality metric, among the points whose mean
    memorization_rate is at most `max_memorization` (a copying generator does not win on
    quality); and the reason in words."""
    if not points or primary is None:
        return None, "no quality metric common to all experiments"
    d = QUALITY[primary]
    eligible = list(range(len(points)))
    note = ""
    if max_memorization is not None and all(p.mean("memorization_rate") is not None for p in points):
        ok = [i for i in eligible if points[i].mean("memorization_rate") <= max_memorization]
        if ok:
            if len(ok) < len(eligible):
                note = (f"; {len(eligible) - len(ok)} point(s) left out for memorization_rate > "
                        f"{max_memorization:g}")
            eligible = ok
        else:
            note = f"; every point has memorization_rate > {max_memorization:g}: ranked on quality alone"
    i = min(eligible, key=lambda j: -d * points[j].mean(primary))
    return i, f"best {primary} ({'higher' if d > 0 else 'lower'} is better){note}"


# --------------------------------------------------------------------------- output
def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "null" if v is None else str(v)


def _label(swept: Sequence[str], key: tuple) -> str:
    if not swept:
        return "all runs"
    return ", ".join(f"{k.split('.')[-1]}={_fmt(v)}" for k, v in zip(swept, key))


def _mean_sd(p: Point, m: str) -> str:
    mean, sd = p.mean(m), p.sd(m)
    if mean is None:
        return ""
    return _fmt(mean) + (f" ± {sd:.2g}" if sd is not None else "")


@dataclasses.dataclass
class Result:
    runs: list
    skipped: list
    swept: list
    points: list
    quality: list
    memorization: list
    best: int | None
    best_reason: str
    effects: list
    files: dict

    def words(self) -> list[str]:
        lines = []
        if self.best is not None:
            lines.append(f"Best point: {_label(self.swept, self.points[self.best].key)} "
                         f"({self.best_reason}).")
        for e in self.effects:
            lines.append(e.sentence() + ".")
        if not self.effects:
            lines.append("Only one point (no param differs between the experiments): nothing to "
                         "attribute; the table gives the spread over seeds.")
        return lines


def compare(show: list, out: str | Path = "reports/compare", plots: str | Path = "plots/compare",
            read: Callable[[str, str], str | None] | None = None, seed_keys: Sequence[str] = SEED_KEYS,
            max_memorization: float | None = 0.05, include_baseline: bool = False) -> Result:
    """Write the comparison of the experiments in `show` (`dvc exp show --json`)."""
    runs, skipped = runs_from_show(show, include_baseline)
    for name, why in skipped:
        log.warning("experiment %s left out: %s", name, why)
    if not runs:
        raise CompareError(f"no finished experiment with {METRICS_FILE} to compare "
                           f"({len(skipped)} left out: "
                           + (", ".join(f"{n} {w}" for n, w in skipped) or "none queued") + ")")
    if read is not None:
        attach_curves(runs, read)
    swept = swept_params(runs, seed_keys)
    points = group(runs, swept)
    quality, memo = metric_keys(runs)
    best, why = best_point(points, quality[0] if quality else None, max_memorization)
    shown = quality + memo
    eff = effects(points, swept, shown)
    out, plots = Path(out), Path(plots)
    files = {"png": plots / "compare.png", "curves": plots / "curves.png",
             "html": out / "index.html", "md": out / "table.md", "csv": out / "points.csv",
             "runs_csv": out / "runs.csv", "json": out / "compare.json"}
    res = Result(runs, skipped, swept, points, quality, memo, best, why, eff, files)
    _draw(res, files["png"])
    has_curves = _draw_curves(res, files["curves"])
    if not has_curves:
        files.pop("curves")
    _write_tables(res)
    _write_html(res)
    return res


def _columns(res: Result) -> list[str]:
    extra = [k for k in ("num_train",) + DERIVED if all(k in r.metrics for r in res.runs)]
    return res.quality + res.memorization + extra


def _write_tables(res: Result) -> None:
    cols = _columns(res)
    head = ["point", *res.swept, "seeds", *cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, p in enumerate(res.points):
        mark = f"{i} (best)" if i == res.best else str(i)
        lines.append("| " + " | ".join([mark, *(_fmt(v) for v in p.key), str(len(p.runs)),
                                        *(_mean_sd(p, m) for m in cols)]) + " |")
    atomic.write_text(res.files["md"], "\n".join(lines) + "\n\n" + "\n".join(
        f"- {w}" for w in res.words()) + "\n")

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["point", *res.swept, "n", *(f"{m}_{s}" for m in cols for s in ("mean", "sd")), "best"])
    for i, p in enumerate(res.points):
        w.writerow([i, *p.key, len(p.runs), *(("" if v is None else v)
                                               for m in cols for v in (p.mean(m), p.sd(m))),
                    int(i == res.best)])
    atomic.write_text(res.files["csv"], buf.getvalue())

    buf = io.StringIO()
    w = csv.writer(buf)
    seeds = [k for k in SEED_KEYS if any(k in r.params for r in res.runs)]
    w.writerow(["name", "rev", *res.swept, *seeds, *cols])
    for p in res.points:
        for r in p.runs:
            w.writerow([r.name, r.rev, *p.key, *(r.params.get(k) for k in seeds),
                        *(r.metrics.get(m, "") for m in cols)])
    atomic.write_text(res.files["runs_csv"], buf.getvalue())

    data = {"best": res.best, "points": [
        {"params": dict(zip(res.swept, p.key)), "n": len(p.runs),
         **{f"{m}_{s}": v for m in cols for s, v in (("mean", p.mean(m)), ("sd", p.sd(m)))
            if v is not None}} for p in res.points]}
    atomic.write_json(res.files["json"], data)


def _plt():
    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _direction(m: str) -> str:
    if m in QUALITY:
        return "quality, " + ("higher" if QUALITY[m] > 0 else "lower") + " = better"
    return "memorization, " + ("higher" if MEMORIZATION[m] > 0 else "lower") + " = less copying"


def _draw(res: Result, path: Path) -> None:
    plt = _plt()
    rows = res.quality[:2] + res.memorization  # primary quality (+ one more), then copying
    swept = res.swept or ["(none)"]
    # one row per swept param (a question), one column per metric: quality left, copying right
    fig, axes = plt.subplots(len(swept), len(rows), figsize=(3.6 * len(rows), 3.0 * len(swept) + 0.4),
                             squeeze=False)
    cmap = plt.get_cmap("tab10")
    for c, param in enumerate(swept):
        i = res.swept.index(param) if res.swept else None
        levels = sorted({p.key[i] for p in res.points}, key=_sortable) if i is not None else [None]
        others = [k for k in res.swept if k != param]
        series: dict[tuple, list[Point]] = {}
        for p in res.points:
            okey = tuple(v for k, v in zip(res.swept, p.key) if k != param)
            series.setdefault(okey, []).append(p)
        for r, m in enumerate(rows):
            ax = axes[c][r]
            for s, (okey, pts) in enumerate(sorted(series.items(),
                                                   key=lambda kv: tuple(_sortable(v) for v in kv[0]))):
                colour = cmap(s % 10)
                xs, ys, es = [], [], []
                for p in sorted(pts, key=lambda p: _sortable(p.key[i]) if i is not None else 0):
                    x = levels.index(p.key[i]) if i is not None else 0
                    xs.append(x)
                    ys.append(p.mean(m))
                    es.append(p.sd(m) or 0.0)
                    vals = p.values(m)
                    jit = [x + 0.06 * (k - (len(vals) - 1) / 2) for k in range(len(vals))]
                    ax.scatter(jit, vals, s=12, color=colour, alpha=0.5, zorder=2)
                    if res.best is not None and p is res.points[res.best]:
                        ax.scatter([x], [p.mean(m)], marker="*", s=260, color="gold",
                                   edgecolor="black", zorder=4, label="best")
                label = _label(others, okey) if others else "mean ± sd over seeds"
                ax.errorbar(xs, ys, yerr=es, color=colour, marker="o", capsize=3, label=label,
                            zorder=3)
            ax.set_xticks(range(len(levels)))
            ax.set_xticklabels([_fmt(v) for v in levels])
            ax.set_xlabel(param)
            ax.set_title(f"{m} ({_direction(m)})", fontsize=9)
            ax.grid(alpha=0.3)
            if r == 0:
                ax.legend(fontsize=7)
    n = len(res.runs)
    fig.suptitle(f"{n} experiments, {len(res.points)} points (mean ± sd over seeds, dots = seeds): "
                 f"quality (left) and memorization (right) per swept param", fontsize=10)
    fig.tight_layout()
    with atomic.atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)


def _draw_curves(res: Result, path: Path) -> bool:
    runs = [r for r in res.runs if len(r.curve) >= 2]
    keys = [k for k in res.quality[:1] + res.memorization if any(k in row for r in runs for row in r.curve)]
    if not runs or not keys:
        return False
    plt = _plt()
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.2), squeeze=False)
    cmap = plt.get_cmap("tab10")
    index = {id(r): i for i, p in enumerate(res.points) for r in p.runs}
    for ax, k in zip(axes[0], keys):
        drawn = set()
        for r in runs:
            i = index[id(r)]
            pts = [(row["kimg"], row[k]) for row in r.curve if k in row]
            ax.plot([a for a, _ in pts], [b for _, b in pts], marker=".", color=cmap(i % 10),
                    alpha=0.8, label=None if i in drawn else _label(res.swept, res.points[i].key))
            drawn.add(i)
        ax.set_title(f"{k} ({_direction(k)})", fontsize=9)
        ax.set_xlabel("kimg (training snapshot)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    with atomic.atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)
    return True


def _write_html(res: Result) -> None:
    import base64
    import html

    cols = _columns(res)
    e = html.escape
    parts = ["<h1>SpiderGAN: experiments compared</h1>",
             f"<p>{len(res.runs)} experiments, {len(res.points)} points; swept: "
             f"{e(', '.join(res.swept) or 'nothing')}; spread over "
             f"{e(', '.join(k for k in SEED_KEYS if any(k in r.params for r in res.runs)))}.</p>",
             "<h2>What moved what</h2><ul>" + "".join(f"<li>{e(w)}</li>" for w in res.words())
             + "</ul>"]
    for caption, key in (("Quality and memorization against the swept params", "png"),
                         ("Scores per training snapshot (evaluate.snapshots)", "curves")):
        path = res.files.get(key)
        if path and Path(path).is_file():
            data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
            parts.append(f"<h2>{e(caption)}</h2><img alt=\"{e(Path(path).name)}\" "
                         f"src=\"data:image/png;base64,{data}\">")
    head = ["point", *res.swept, "seeds", *cols]
    rows = "".join("<tr>" + "".join(f"<td>{e(x)}</td>" for x in [
        f"{i} (best)" if i == res.best else str(i), *(_fmt(v) for v in p.key), str(len(p.runs)),
        *(_mean_sd(p, m) for m in cols)]) + "</tr>" for i, p in enumerate(res.points))
    parts.append("<h2>Points (mean ± sd over seeds)</h2><table><tr>"
                 + "".join(f"<th>{e(h)}</th>" for h in head) + f"</tr>{rows}</table>")
    if res.skipped:
        parts.append("<h2>Left out</h2><ul>" + "".join(f"<li>{e(n)}: {e(w)}</li>"
                                                      for n, w in res.skipped) + "</ul>")
    style = ("body{font-family:sans-serif;margin:2em;max-width:90em}table{border-collapse:collapse}"
             "th,td{border:1px solid #ccc;padding:2px 8px;text-align:left}td{font-family:monospace}"
             "img{max-width:100%}")
    atomic.write_text(res.files["html"], "<!doctype html><html><head><meta charset=\"utf-8\">"
                      f"<title>SpiderGAN compare</title><style>{style}</style></head><body>"
                      + "\n".join(parts) + "</body></html>\n")
