"""`spidergan <command>`: each pipeline stage and tool, calling the same functions as stages/.

Stage commands read `params.yaml` (validated as a whole) from the project root; tool commands
take their inputs as arguments. Add a command by writing a `_cmd_<name>(args)` function and
registering it in `build_parser`.
"""

from __future__ import annotations

import argparse
import sys

from spidergan import env, params


def _load(args) -> params.Params:
    return params.load(args.params)


def _cmd_scrape(args) -> int:
    from spidergan import scrape

    p = _load(args)
    counts = scrape.run(p.scrape, seed=p.seed, out=args.out, metrics_path=args.metrics)
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
