"""Flickr scrape throughput: our pool of 8 against a sequential loop, one request at a time.

Both scrape the same group pool from the local Flickr-protocol server of the tests
(tests/flickr_server.py, run in its own process) with 50 ms of latency added to every request (API calls and image
files alike), and both do the same work per photo: download, full decode and validation, atomic
write, manifest line. The baseline is the straightforward loop: list a page, then fetch the
photos one after the other. Ours is `spidergan.scrape.run` (scrape.flickr.concurrency = 8).

    python bench/scrape.py [--photos 240] [--latency 0.05] [--concurrency 8] [--repeat 3]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
os.environ.setdefault("TQDM_DISABLE", "1")

from flickr_server import FlickrServer, jpeg  # noqa: E402

from spidergan import env, images, ingest, params, scrape  # noqa: E402
from spidergan.sources import flickr  # noqa: E402

GID = "32591745@N00"


def _serve(n: int, latency: float, conn) -> None:
    """In a child process, so the server's work does not compete for the scraper's GIL (the
    real Flickr is another machine)."""
    fs = make_server(n, latency)
    conn.send((fs.rest_url, fs.api_key, fs.secret))
    conn.recv()  # until told to stop
    fs.stop()


def make_server(n: int, latency: float) -> FlickrServer:
    fs = FlickrServer(latency=latency)
    for i in range(n):
        # a few distinct pictures, each at two sizes as Flickr lists them
        c = (i * 37 % 256, i * 11 % 256, 90)
        fs.add_photo(10_000 + i, {"z": jpeg(320, 240, color=c), "l": jpeg(480, 360, color=c)})
    fs.add_group(GID, [10_000 + i for i in range(n)])
    return fs.start()


def scrape_params(concurrency: int):
    return params.from_dict({"scrape": {"source": "flickr", "min_side": 200, "flickr": {
        "group": GID, "per_page": 500, "max_side": 640, "concurrency": concurrency,
        "timeout_s": 10.0}}}).scrape


def ours(out: Path, concurrency: int) -> int:
    return scrape.run(scrape_params(concurrency), seed=0, out=out, metrics_path=None)["images"]


def sequential(out: Path) -> int:
    """The naive loop: one request at a time, same per-photo work."""
    p = scrape_params(1)
    client = flickr.Client(flickr.credentials(), p.flickr)
    dl = flickr.Downloader(p.flickr)
    ing = ingest.Ingest(out, p, "flickr", desc="baseline")
    for ph in flickr.iter_photos(client, p.flickr, GID):
        item_id = f"flickr-{ph['id']}"
        ing.listed(item_id)
        size = flickr.choose_size(ph, p.flickr.max_side)
        tmp = ing.temp_path(item_id)
        data = dl.fetch(size[1], tmp)
        try:
            stored = ing.store(item_id, data, tmp=tmp)
        except images.ImageRejected as e:
            ing.reject(item_id, e.reason, e.detail)
            continue
        ing.accept(item_id, stored, flickr.provenance(ph, size, flickr.LICENSES))
    n = ing.finish()["images"]
    dl.close()
    client.close()
    return n


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=int, default=240)
    ap.add_argument("--latency", type=float, default=0.05)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=3,
                    help="runs of each, alternating; the best time of each counts (shared CPUs)")
    args = ap.parse_args(argv)
    env.setup(ROOT)
    ctx = multiprocessing.get_context("spawn")
    conn, child_conn = ctx.Pipe()
    server = ctx.Process(target=_serve, args=(args.photos, args.latency, child_conn), daemon=True)
    server.start()
    rest_url, key, secret = conn.recv()
    os.environ.update(FLICKR_API_KEY=key, FLICKR_API_SECRET=secret, FLICKR_REST_URL=rest_url)
    try:
        t_base = t_ours = float("inf")
        for r in range(args.repeat):
            with tempfile.TemporaryDirectory() as d:
                t = time.perf_counter()
                n_base = sequential(Path(d) / "baseline")
                t_base = min(t_base, time.perf_counter() - t)
                t = time.perf_counter()
                n_ours = ours(Path(d) / "ours", args.concurrency)
                t_ours = min(t_ours, time.perf_counter() - t)
    finally:
        conn.send("stop")
        server.join(10)
    assert n_base == n_ours == args.photos, (n_base, n_ours)
    base_rate, our_rate = n_base / t_base, n_ours / t_ours
    # the same requests with nothing but latency: the sequential loop waits for 1 page + N
    # photos, the pool at least for 1 page + ceil(N / pool) rounds of photos
    pages = -(-args.photos // 500)
    ideal = (pages + args.photos) / (1 + -(-args.photos // args.concurrency))
    print(f"scrape {args.photos} photos (best of {args.repeat}), {args.latency * 1000:.0f} ms latency per request: "
          f"ours (pool of {args.concurrency}) {our_rate:.1f} photos/s, "
          f"baseline (sequential) {base_rate:.1f} photos/s, "
          f"ratio {our_rate / base_rate:.1f}x (goal >= 8x; latency-only ceiling for this "
          f"setup {ideal:.2f}x; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
