"""`spidergan <command>`: each pipeline stage and tool, calling the same functions as stages/.

Stage commands read `params.yaml` (validated as a whole) from the project root; tool commands
take their inputs as arguments. Add a command by writing a `_cmd_<name>(args)` function and
registering it in `build_parser`.
"""

from __future__ import annotations

import argparse
import os
import sys

from spidergan import env, params


def _load(args) -> params.Params:
    return params.load(args.params)


def _cmd_scrape(args) -> int:
    from spidergan import scrape

    p = _load(args)
    try:
        counts = scrape.run(p.scrape, seed=p.seed, out=args.out, metrics_path=args.metrics)
    except scrape.ScrapeError as e:  # credentials, unknown group, missing folder
        print(f"spidergan scrape: {e}", file=sys.stderr)
        return 1
    print(" ".join(f"{k}={v}" for k, v in counts.items()))
    return 0


def _cmd_import_labels(args) -> int:
    from spidergan.detect import labels

    classes = None
    if args.classes:
        classes = [c.strip() for c in args.classes.split(",") if c.strip()]
        if args.format == "yolo":
            try:
                classes = [int(c) for c in classes]
            except ValueError:
                print(f"spidergan import-labels: --classes for yolo takes class ids such as 0,2; "
                      f"got {args.classes!r}", file=sys.stderr)
                return 2
    try:
        report = labels.import_labels(args.format, args.src, out=args.out, raw_dir=args.raw,
                                      classes=classes, dry_run=args.dry_run)
    except (FileNotFoundError, ValueError) as e:
        print(f"spidergan import-labels: {e}", file=sys.stderr)
        return 1
    print(report.text())
    if not args.dry_run and report.written:
        print(f"wrote {len(report.written)} label files to {args.out}/ (named by image id)")
    if args.report:
        from spidergan import atomic

        atomic.write_json(args.report, {**report.counts(), "rejects": report.rejected})
    return 0 if report.written else 1


def _cmd_train_detector(args) -> int:
    from spidergan.detect import labels, train

    p = _load(args)
    try:
        m = train.run(p.detect, source=p.scrape.source, seed=p.seed, raw_dir=args.raw,
                      labels_dir=args.labels, decisions=args.decisions, out_model=args.model,
                      out_dir=args.out, metrics_path=args.metrics)
    except (labels.NoLabels, train.DetectorError) as e:
        print(f"spidergan: {e}", file=sys.stderr)
        return 1
    print(f"mAP50={m['map50']:.3f} mAP50-95={m['map50_95']:.3f} precision={m['precision']:.3f} "
          f"recall={m['recall']:.3f} ({m['seconds']} s)")
    return 0


def _cmd_detect(args) -> int:
    from spidergan.detect import predict, train

    p = _load(args)
    try:
        c = predict.run(p.detect, raw_dir=args.raw, model_path=args.model, out=args.out,
                        labels_path=args.labels, metrics_path=args.metrics,
                        failures_png=args.failures)
    except train.DetectorError as e:
        print(f"spidergan: {e}", file=sys.stderr)
        return 1
    print(" ".join(f"{k}={v}" for k, v in c.items() if not isinstance(v, dict)))
    if "heldout" in c:
        print("held-out: " + " ".join(f"{k}={v}" for k, v in c["heldout"].items()))
    return 0


def _cmd_mask(args) -> int:
    from spidergan.mask import base, stage

    p = _load(args)
    try:
        m = stage.run(p.mask, seed=p.seed, manifest_path=args.manifest, images_root=args.images,
                     out=args.out, raw_root=args.raw or None, metrics_path=args.metrics,
                     plots_dir=args.plots)
    except base.MaskError as e:
        print(f"spidergan mask: {e}", file=sys.stderr)
        return 1
    print(" ".join(f"{k}={v}" for k, v in m.items() if not isinstance(v, dict)))
    return 0


def _cmd_crop(args) -> int:
    from spidergan import crop

    p = _load(args)
    counts = crop.run(p.crop, raw=args.raw, out=args.out, detections_path=args.detections,
                      decisions_path=args.decisions, metrics_path=args.metrics)
    print(" ".join(f"{k}={v}" for k, v in counts.items()))
    return 0


def _cmd_dedup(args) -> int:
    from spidergan import dedup

    p = _load(args)
    m = dedup.run(p.dedup, crops=args.crops, out=args.out, metrics_path=args.metrics,
                  plots_dir=args.plots)
    print(" ".join(f"{k}={v}" for k, v in m.items()))
    return 0


def _cmd_nearest(args) -> int:
    from spidergan import atomic
    from spidergan.metrics import memorization

    try:
        from spidergan import copies

        forms = {"plain": copies.forms_for(mirror=False), "mirror": copies.forms_for(mirror=True),
                 "dihedral": copies.forms_for(rotations=True)}[args.forms]
        res = memorization.nearest_folders(args.query_dir, args.reference_dir, kind=args.hash,
                                           hash_size=args.hash_size, threshold=args.threshold,
                                           forms=forms, fast=not args.exact)
    except (FileNotFoundError, ValueError) as e:
        print(f"spidergan nearest: {e}", file=sys.stderr)
        return 2
    for item, reason, detail in res.skipped:
        print(f"skipped {item}: {reason} ({detail})", file=sys.stderr)
    text = memorization.to_csv(res, args.query_dir, args.reference_dir)
    s = res.summary()
    by_form = ", ".join(f"{k} {v}" for k, v in sorted(s["copies_by_form"].items())) or "none"
    line = (f"{s['within_threshold']} of {s['queries']} query images within copy distance "
            f"{s['threshold']} of a reference image ({by_form}): rate {s['memorization_rate']:.4f}; "
            f"{s['references']} references, {s['skipped']} unreadable skipped")
    if args.out:
        atomic.write_text(args.out, text)
        print(line)
    else:
        sys.stdout.write(text)
        print(line, file=sys.stderr)  # stdout stays a clean CSV
    if args.pairs:
        memorization.save_pairs_picture(res, args.pairs, n=args.pairs_n)
    return 0


def _cmd_dataset(args) -> int:
    from spidergan.gan import dataset

    p = _load(args)
    inputs = {"masked": (f"{args.masked}/manifest.jsonl", args.masked),
              "unique": (f"{args.unique}/manifest.jsonl", args.crops)}
    info = dataset.run(p.dataset, resolution=p.train.resolution, seed=p.seed, inputs=inputs,
                       out=args.out, metrics_path=args.metrics)
    print(" ".join(f"{k}={v}" for k, v in info.items() if k != "sha256"))
    return 0


def _cmd_train(args) -> int:
    from spidergan.gan import train

    p = _load(args)
    result = train.run(p.train, seed=params.train_seed(p.train, p.seed), dataset=args.dataset, out=args.out,
                       live_dir=args.live, metrics_path=args.metrics)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 reports
        print(" ".join(f"{k}={v}" for k, v in result.items()))
    return 0


def _cmd_generate(args) -> int:
    from spidergan.gan import generate

    seeds = generate.parse_seeds(args.seeds)
    written = generate.run(args.checkpoint, args.out, seeds, psi=args.psi, grid=args.grid,
                           gif=args.gif, frames=args.frames, noise_mode=args.noise,
                           device=args.device)
    for path in written:
        print(path)
    return 0


def _cmd_import_checkpoint(args) -> int:
    from spidergan.gan import nvidia_import

    try:
        info = nvidia_import.import_checkpoint(args.pkl, args.out)
    except (FileNotFoundError, nvidia_import.UnsafePickleError, nvidia_import.NotImportable) as e:
        print(f"spidergan import-checkpoint: {e}", file=sys.stderr)
        return 1
    p = info["augment_p"]
    print(f"wrote {info['out']} ({info['format']}, augment p "
          f"{'absent' if p is None else f'{p:.3f}'})")
    print("train with these settings (params.yaml or dvc exp run -S ...):")
    print("  " + " ".join(f"-S {s}" for s in nvidia_import.params_overrides(info["arch"])))
    return 0


def _cmd_augment_preview(args) -> int:
    from spidergan.gan import augment

    ps = [0.2, 0.5, 0.8] + [args.p]
    try:
        images = augment.load_images(args.images, count=args.count, resolution=args.resolution)
        out = augment.write_preview(args.out, images, args.augpipe, ps, seed=args.seed)
    except (FileNotFoundError, ValueError) as e:
        print(f"spidergan augment-preview: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out}: {images.shape[0]} images, augpipe={args.augpipe}, "
          f"rows p=0 (original), {', '.join(f'{q:g}' for q in dict.fromkeys(ps) if q != 0)}")
    return 0


def _cmd_evaluate(args) -> int:
    from spidergan import evaluate

    p = _load(args)
    try:
        m = evaluate.run(p.evaluate, seed=p.seed, dataset=args.dataset, gan=args.gan,
                         detector=args.detector, out=args.out, plots=args.plots,
                         report_path=args.report, metrics_path=args.metrics, detect=p.detect)
    except (evaluate.EvaluateError, FileNotFoundError) as e:
        print(f"spidergan evaluate: {e}", file=sys.stderr)
        return 2
    for k, v in sorted(m.items()):
        print(f"{k}: {v:.6g}" if isinstance(v, float) else f"{k}: {v}")
    return 0


def _cmd_compare(args) -> int:
    import json

    from spidergan import compare

    try:
        show = (json.loads(open(args.show_json).read()) if args.show_json
                else compare.dvc_exp_show(args.repo))
        res = compare.compare(show, out=args.out, plots=args.plots,
                              read=compare.git_reader(args.repo),
                              seed_keys=[k for k in args.seed_keys.split(",") if k],
                              max_memorization=args.max_memorization,
                              include_baseline=args.baseline)
    except (compare.CompareError, compare.ExperimentsError) as e:
        print(f"spidergan compare: {e}", file=sys.stderr)
        return 1
    print((res.files["md"]).read_text(), end="")
    for name, why in res.skipped:
        print(f"left out: {name} ({why})")
    print("wrote " + " ".join(str(f) for f in res.files.values()))
    return 0


def _cmd_requeue(args) -> int:
    from spidergan import sweep

    try:
        done = sweep.requeue(args.repo, dry_run=args.dry_run)
    except RuntimeError as e:
        print(f"spidergan requeue: {e}", file=sys.stderr)
        return 1
    for name, ov in done:
        print(("would queue" if args.dry_run else "queued") + f" {name} again: "
              + " ".join(f"-S {o}" for o in ov))
    if not done:
        print("no failed or dead experiment to queue again")
    elif not args.dry_run:
        print("run `dvc queue start -j N` to carry on")
    return 0


def _cmd_fetch_inception(args) -> int:
    from spidergan.metrics import fid

    try:
        path = fid.ensure_weights(fetch=True)
    except fid.InceptionUnavailable as e:
        print(f"spidergan fetch-inception: {e}", file=sys.stderr)
        return 2
    print(f"{path} ({path.stat().st_size} bytes, sha256 {fid.file_sha256(path)[:16]}...)")
    return 0


def _cmd_synthetic_sample(args) -> int:
    import dataclasses

    from PIL import Image

    from spidergan import atomic
    from spidergan.sources import synthetic

    p = _load(args)
    sp = p.scrape.synthetic
    seed = p.seed if args.seed is None else args.seed
    im = synthetic.sample_grid(dataclasses.replace(sp, count=args.count), seed, count=args.count,
                               cols=args.cols, cell=args.cell, boxes=args.boxes)
    png = str(args.out).lower().endswith(".png")
    if args.palette and png:   # 256-colour PNG: a third of the size, for docs
        im = im.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.FLOYDSTEINBERG)
    atomic.save_image(args.out, im, **({"optimize": True} if png else {}))
    print(f"wrote {args.out}: {args.count} synthetic images (seed {seed})")
    return 0


def _cmd_review(args) -> int:
    from spidergan.review import app

    app.serve(env.project_root(), data=args.data, host=args.host, port=args.port)
    return 0


def _cmd_params(args) -> int:
    import json

    print(json.dumps(params.to_dict(_load(args)), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="spidergan", description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml", help="params file (default: %(default)s)")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", required=True)

    s = sub.add_parser("scrape", help="bring images from the configured source into data/raw")
    s.add_argument("--out", default="data/raw")
    s.add_argument("--metrics", default="metrics/scrape.json")
    s.set_defaults(func=_cmd_scrape)

    s = sub.add_parser("import-labels", help="import detector labels from a labelling tool's export")
    s.add_argument("--format", required=True, choices=("voc", "coco", "labelstudio", "yolo"),
                   help="voc: LabelImg XML file or folder; coco: CVAT & co JSON; labelstudio: "
                        "JSON export; yolo: a folder of <photo stem>.txt files")
    s.add_argument("src", help="the export: a file, or a folder of VOC XML or YOLO txt files")
    s.add_argument("--out", default="data/labels")
    s.add_argument("--raw", default="data/raw")
    s.add_argument("--classes", default=None,
                   help="comma-separated classes meaning spider: names for voc/coco/labelstudio "
                        "(default: spider), ids for yolo (default: every id)")
    s.add_argument("--report", default=None, help="also write the report as JSON here")
    s.add_argument("--dry-run", action="store_true", help="validate and report, write nothing")
    s.set_defaults(func=_cmd_import_labels)

    s = sub.add_parser("train-detector", help="train the spider detector (as the train_detector stage)")
    s.add_argument("--raw", default="data/raw")
    s.add_argument("--labels", default="data/labels")
    s.add_argument("--decisions", default="data/review/decisions.jsonl")
    s.add_argument("--model", default="models/detector.pt")
    s.add_argument("--out", default="data/detector")
    s.add_argument("--metrics", default="metrics/train_detector.json")
    s.set_defaults(func=_cmd_train_detector)

    s = sub.add_parser("detect", help="detect spiders on data/raw (as the detect stage)")
    s.add_argument("--raw", default="data/raw")
    s.add_argument("--model", default="models/detector.pt")
    s.add_argument("--out", default="data/detections.jsonl")
    s.add_argument("--labels", default="data/detector/labels.jsonl",
                   help="train_detector's split (held-out quality figures)")
    s.add_argument("--metrics", default="metrics/detect.json")
    s.add_argument("--failures", default="plots/detect/failures.png")
    s.set_defaults(func=_cmd_detect)

    s = sub.add_parser("mask", help="cut spiders out of the crops: data/masked (mask.method)")
    s.add_argument("--manifest", default="data/unique/manifest.jsonl",
                   help="input crop manifest (default: %(default)s)")
    s.add_argument("--images", default="data/crops", help="folder the manifest's files are in")
    s.add_argument("--raw", default="data/raw", help="scrape output with ground truth ('' = none)")
    s.add_argument("--out", default="data/masked")
    s.add_argument("--metrics", default="metrics/mask.json")
    s.add_argument("--plots", default="plots/mask")
    s.set_defaults(func=_cmd_mask)

    s = sub.add_parser("crop", help="square crops around the spiders: data/raw -> data/crops")
    s.add_argument("--raw", default="data/raw")
    s.add_argument("--out", default="data/crops")
    s.add_argument("--detections", default="data/detections.jsonl")
    s.add_argument("--decisions", default="data/review/decisions.jsonl")
    s.add_argument("--metrics", default="metrics/crop.json")
    s.set_defaults(func=_cmd_crop)

    s = sub.add_parser("dedup", help="drop near-duplicate crops: data/crops -> data/unique")
    s.add_argument("--crops", default="data/crops")
    s.add_argument("--out", default="data/unique")
    s.add_argument("--metrics", default="metrics/dedup.json")
    s.add_argument("--plots", default="plots/dedup")
    s.set_defaults(func=_cmd_dedup)

    s = sub.add_parser("nearest", help="nearest reference image for every query image, in any form "
                       "training shows it (x-flip, ...): copies of training photos")
    s.add_argument("query_dir")
    s.add_argument("reference_dir")
    s.add_argument("--hash", default="phash", choices=("ahash", "dhash", "phash", "whash"))
    s.add_argument("--hash-size", type=int, default=16,
                   help="hash of hash-size**2 bits (default: %(default)s, as dedup)")
    s.add_argument("--threshold", type=float, default=0.14,
                   help="copy distance (1 - thumbnail correlation, spidergan.copies) counted as a "
                        "copy (default: %(default)s: <= 1%% false matches on bench/copies.py)")
    s.add_argument("--forms", default="mirror", choices=("plain", "mirror", "dihedral"),
                   help="forms a copy may take: plain, + x-flip (train.mirror), + 90-degree turns "
                        "(ADA's blit ops) (default: %(default)s)")
    s.add_argument("--exact", action="store_true",
                   help="decode JPEGs fully (plain hash = imagehash's); default: reduced-scale "
                        "decoding, 2-3x faster, the same copies (bench/copies.py)")
    s.add_argument("--out", help="CSV file (default: stdout)")
    s.add_argument("--pairs", metavar="PNG", help="also draw the closest pairs side by side")
    s.add_argument("--pairs-n", type=int, default=16)
    s.set_defaults(func=_cmd_nearest)

    s = sub.add_parser("dataset", help="pack dataset.size images at train.resolution into data/dataset")
    s.add_argument("--masked", default="data/masked", help="mask stage output (source: masked)")
    s.add_argument("--unique", default="data/unique", help="dedup stage output (source: unique)")
    s.add_argument("--crops", default="data/crops", help="root of the crop files (source: unique)")
    s.add_argument("--out", default="data/dataset")
    s.add_argument("--metrics", default="metrics/dataset.json")
    s.set_defaults(func=_cmd_dataset)

    s = sub.add_parser("train", help="train (or resume) the StyleGAN2 on data/dataset")
    s.add_argument("--dataset", default="data/dataset")
    s.add_argument("--out", default="models/gan")
    s.add_argument("--live", default="plots/train", help="dvclive folder (logs, sample grids)")
    s.add_argument("--metrics", default="metrics/train.json")
    s.set_defaults(func=_cmd_train)

    s = sub.add_parser("generate", help="images, a grid or an interpolation GIF from a checkpoint")
    s.add_argument("--checkpoint", default="models/gan/checkpoint.pt")
    s.add_argument("--out", default="generated")
    s.add_argument("--seeds", default="0-15", help="e.g. 0-15 or 1,5,9 (default: %(default)s)")
    s.add_argument("--psi", type=float, default=1.0, help="truncation psi (1 = none)")
    s.add_argument("--grid", action="store_true", help="also write grid.png of all seeds")
    s.add_argument("--gif", action="store_true",
                   help="also write interpolation.gif through the seeds in order")
    s.add_argument("--frames", type=int, default=24, help="GIF frames between two seeds")
    s.add_argument("--noise", default="const", choices=("const", "random", "none"))
    s.add_argument("--device", default="cpu")
    s.set_defaults(func=_cmd_generate)

    s = sub.add_parser("import-checkpoint",
                       help="convert a published NVIDIA StyleGAN2 network pickle into a "
                            "checkpoint for train.resume_from (never runs code from the file)")
    s.add_argument("pkl", help="stylegan2-ada-pytorch .pkl (or TF StyleGAN2 .pkl)")
    s.add_argument("out", help="checkpoint to write, e.g. models/pretrained/cat256.pt")
    s.set_defaults(func=_cmd_import_checkpoint)

    s = sub.add_parser("augment-preview",
                       help="grid of real images as the discriminator sees them at several p")
    s.add_argument("--p", type=float, default=0.5,
                   help="augmentation probability shown besides 0.2, 0.5, 0.8 (default: %(default)s)")
    s.add_argument("--augpipe", default="bgc",
                   help="augmentation groups: blit, geom, color, cutout, bg, bgc, bgcc, or "
                        "'+'-joined group/operation names (default: %(default)s)")
    s.add_argument("--images", default="data/dataset",
                   help="folder searched (recursively) for real images (default: %(default)s)")
    s.add_argument("--count", type=int, default=8, help="images per row (default: %(default)s)")
    s.add_argument("--resolution", type=int, default=64, help="pixels (default: %(default)s)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", default="augment-preview.png")
    s.set_defaults(func=_cmd_augment_preview)

    s = sub.add_parser("evaluate", help="score the trained GAN: FID/KID/MiFID/precision/recall "
                       "(with Inception weights), SWD, detector rate, memorization")
    s.add_argument("--dataset", default="data/dataset")
    s.add_argument("--gan", default="models/gan")
    s.add_argument("--detector", default="models/detector.pt")
    s.add_argument("--out", default="data/eval")
    s.add_argument("--plots", default="plots/evaluate")
    s.add_argument("--report", default="reports/evaluate.html")
    s.add_argument("--metrics", default="metrics/evaluate.json")
    s.set_defaults(func=_cmd_evaluate)

    s = sub.add_parser("compare", help="experiments (`dvc exp show --json`) compared: quality and "
                                       "memorization against the swept params, spread over seeds")
    s.add_argument("--out", default="reports/compare", help="index.html, table.md, points.csv, "
                                                            "runs.csv, compare.json")
    s.add_argument("--plots", default="plots/compare", help="compare.png, curves.png")
    s.add_argument("--repo", default=".", help="project whose experiments are compared")
    s.add_argument("--show-json", help="read this saved `dvc exp show --json` instead of running it")
    s.add_argument("--seed-keys", default="seed,train.seed",
                   help="params that only repeat a point (the spread), comma-separated")
    s.add_argument("--max-memorization", type=float, default=0.05,
                   help="the best point must have mean memorization_rate <= this "
                        "(default: %(default)s)")
    s.add_argument("--baseline", action="store_true", help="count the baseline commit as a run too")
    s.set_defaults(func=_cmd_compare)

    s = sub.add_parser("requeue", help="queue failed (or killed) DVC experiments again with the "
                                       "same params; their trainer resumes from the checkpoint left")
    s.add_argument("--repo", default=".")
    s.add_argument("--dry-run", action="store_true", help="only print what would be queued")
    s.set_defaults(func=_cmd_requeue)

    s = sub.add_parser("fetch-inception",
                       help="download the standard FID Inception weights into $TORCH_HOME "
                            "(needs internet; evaluate uses them for fid/kid/mifid/precision/recall)")
    s.set_defaults(func=_cmd_fetch_inception)

    s = sub.add_parser("synthetic-sample",
                       help="write a contact sheet of synthetic spider photos (params.yaml's settings)")
    s.add_argument("--count", type=int, default=24)
    s.add_argument("--cols", type=int, default=6)
    s.add_argument("--cell", type=int, default=256, help="cell size in pixels")
    s.add_argument("--seed", type=int, default=None, help="default: params.yaml's seed")
    s.add_argument("--boxes", action="store_true", help="draw the ground-truth boxes")
    s.add_argument("--palette", action="store_true", help="256-colour PNG (smaller file)")
    s.add_argument("--out", default="synthetic_sample.png")
    s.set_defaults(func=_cmd_synthetic_sample)

    s = sub.add_parser("review", help="local web page to accept/reject detections, crops and "
                                      "generated-vs-real pairs (writes data/review/decisions.jsonl)")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    s.add_argument("--port", type=int, default=8765, help="port; 0 picks a free one (default: %(default)s)")
    s.add_argument("--data", default="data", help="data folder, relative to the project root")
    s.set_defaults(func=_cmd_review)

    s = sub.add_parser("params", help="validate params.yaml and print it with all defaults")
    s.set_defaults(func=_cmd_params)
    return ap


def main(argv: list[str] | None = None) -> int:
    env.setup()
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except params.ParamsError as e:
        print(f"spidergan: invalid parameters: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
