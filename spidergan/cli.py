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
    result = train.run(p.train, seed=p.seed, dataset=args.dataset, out=args.out,
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


def _cmd_synthetic_sample(args) -> int:
    import dataclasses

    from PIL import Image

    from spidergan import atomic
    from spidergan.sources import synthetic

    p = _load(args)
    sp = p.scrape.synthetic
    seed = p.seed if args.seed is None else args.seed
    sheet = synthetic.sample_grid(dataclasses.replace(sp, count=args.count), seed, count=args.count,
                                  cols=args.cols, cell=args.cell, boxes=args.boxes)
    atomic.save_image(args.out, Image.fromarray(sheet))
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

    s = sub.add_parser("synthetic-sample",
                       help="write a contact sheet of synthetic spider photos (params.yaml's settings)")
    s.add_argument("--count", type=int, default=24)
    s.add_argument("--cols", type=int, default=6)
    s.add_argument("--cell", type=int, default=256, help="cell size in pixels")
    s.add_argument("--seed", type=int, default=None, help="default: params.yaml's seed")
    s.add_argument("--boxes", action="store_true", help="draw the ground-truth boxes")
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
