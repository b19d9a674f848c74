"""The Flickr source against a local server speaking Flickr's REST protocol (tests/flickr_server.py),
through the real flickrapi client: listing, retries, validation, secrets, resume."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spidergan import env, images, manifest, params, scrape
from spidergan.sources import flickr

sys.path.insert(0, str(Path(__file__).parent))
from flickr_server import FlickrServer, jpeg  # noqa: E402

env.setup()

ROOT = Path(__file__).resolve().parents[1]
GROUP_URL = "https://www.flickr.com/groups/spiders/"
GID = "32591745@N00"


@pytest.fixture
def server(monkeypatch):
    fs = FlickrServer(api_key="KEY-5f3a9c1e7b2d", secret="SECRET-8e4f2a6c")
    fs.start()
    monkeypatch.setenv("FLICKR_API_KEY", fs.api_key)
    monkeypatch.setenv("FLICKR_API_SECRET", fs.secret)
    monkeypatch.setenv("FLICKR_REST_URL", fs.rest_url)
    yield fs
    fs.stop()


def scrape_params(min_side=48, **flickr_kw):
    fk = {"group": GROUP_URL, "per_page": 5, "backoff_s": 0.005, "backoff_max_s": 0.02,
          "max_tries": 4, "timeout_s": 5.0, "concurrency": 4}
    fk.update(flickr_kw)
    return params.from_dict({"scrape": {"source": "flickr", "min_side": min_side,
                                        "flickr": fk}}).scrape


def add_pool(fs, n, start=1000, order=None, **kw):
    for i in range(n):
        fs.add_photo(start + i, {"z": jpeg(80, 60, color=(i * 20 % 256, 40, 90)),
                                 "l": jpeg(128, 96, color=(i * 20 % 256, 40, 90))}, **kw)
    fs.add_group(GID, order or [start + i for i in range(n)], url=GROUP_URL)


def check_output(out: Path) -> list[dict]:
    """Every manifest record's file exists, is RGB JPEG/PNG, matches its size and sha256; no
    temporary files remain; no file is unreferenced."""
    recs = manifest.read(out / "manifest.jsonl")
    assert len({r["id"] for r in recs}) == len(recs)
    for r in recs:
        path = out / r["file"]
        data = path.read_bytes()
        assert hashlib.sha256(data).hexdigest() == r["sha256"]
        with Image.open(io.BytesIO(data)) as im:
            assert im.mode == "RGB" and im.format in ("JPEG", "PNG")
            assert im.size == (r["width"], r["height"])
        images.load_rgb(path)
    files = sorted(p.name for p in (out / "images").iterdir())
    assert files == sorted(Path(r["file"]).name for r in recs)
    assert not [p for p in out.rglob(".*") if p.suffix in (".part", ".tmp")]
    return recs


def run(out, p, metrics=None):
    return scrape.run(p, seed=0, out=out, metrics_path=metrics)


# --------------------------------------------------------------------------- listing
def test_group_pool_pages_dedup_order_attribution_metrics(server, tmp_path):
    # ids 1004 and 1009 appear again at the top of the next page, as when photos are added
    # while the pool is walked
    order = [1000, 1001, 1002, 1003, 1004, 1004, 1005, 1006, 1007, 1008, 1009, 1009, 1010, 1011]
    add_pool(server, 12, order=order)
    out, metrics = tmp_path / "raw", tmp_path / "metrics.json"
    counts = run(out, scrape_params(), metrics)
    recs = check_output(out)
    assert [r["id"] for r in recs] == [f"flickr-{1000 + i}" for i in range(12)]
    assert len(server.requests("api", "flickr.groups.pools.getPhotos")) == 3  # 14 entries / 5
    assert sorted(server.image_gets()) == [str(1000 + i) for i in range(12)]  # each once
    assert counts["listed"] == 12 and counts["downloaded"] == 12 and counts["images"] == 12
    assert json.loads(metrics.read_text())["downloaded"] == 12
    pv = recs[0]["provenance"]
    assert pv["photo_id"] == "1000" and pv["owner"] == "12345@N01"
    assert pv["owner_name"] == "Ann Spider" and pv["license"] == 4
    assert pv["license_name"] == "Attribution License"
    assert pv["license_url"] == "https://creativecommons.org/licenses/by/2.0/"
    assert pv["page_url"] == "https://www.flickr.com/photos/12345@N01/1000/"
    assert pv["source_url"].startswith(server.base) and pv["title"] == "spider 1000"
    rows = list(csv.DictReader(open(out / "ATTRIBUTION.csv")))
    assert [r["photo_id"] for r in rows] == [str(1000 + i) for i in range(12)]
    assert rows[0]["license_name"] == "Attribution License"
    assert rows[0]["photo_page"] == "https://www.flickr.com/photos/12345@N01/1000/"
    assert manifest.read(out / "rejects.jsonl") == []


def test_size_choice_min_side_licence_and_video(server, tmp_path):
    server.add_photo(1, {"z": jpeg(100, 75), "l": jpeg(200, 150), "o": jpeg(400, 300)})
    server.add_photo(2, {"z": jpeg(60, 40)})  # too small even at its largest
    server.add_photo(3, {"z": jpeg(100, 75)}, license=0)  # all rights reserved
    server.add_photo(4, {"z": jpeg(100, 75)}, media="video")
    server.add_photo(5, {"o": jpeg(300, 200)})  # only a size above max_side: the smallest one
    server.add_group(GID, [1, 2, 3, 4, 5], url=GROUP_URL)
    out = tmp_path / "raw"
    counts = run(out, scrape_params(min_side=48, max_side=250))
    recs = {r["id"]: r for r in check_output(out)}
    assert (recs["flickr-1"]["width"], recs["flickr-1"]["provenance"]["size"]) == (200, "l")
    assert recs["flickr-1"]["provenance"]["original_dims"] == [400, 300]
    assert recs["flickr-5"]["width"] == 300
    rejects = manifest.read_by_id(out / "rejects.jsonl")
    assert rejects["flickr-2"]["reason"] == "too_small"
    assert rejects["flickr-3"]["reason"] == "license"
    assert rejects["flickr-4"]["reason"] == "not_a_photo"
    assert sorted(server.image_gets()) == ["1", "5"]  # the skipped ones were not fetched
    assert counts["skipped"] == 3 and counts["reasons"]["license"] == 1


def test_search_sends_licences_and_filters(server, tmp_path):
    server.add_photo(1, {"z": jpeg(100, 75)}, license=4, title="Garden spider")
    server.add_photo(2, {"z": jpeg(100, 75)}, license=0, title="Spider, all rights reserved")
    server.add_photo(3, {"z": jpeg(100, 75)}, license=9, title="Beetle")
    server.add_photo(4, {"z": jpeg(100, 75)}, license=9, title="Jumping spider")
    out = tmp_path / "raw"
    run(out, scrape_params(group="", text="spider"))
    assert [r["id"] for r in check_output(out)] == ["flickr-1", "flickr-4"]
    assert server.requests("api", "flickr.photos.search")


def test_limit_is_incremental_and_shrinks(server, tmp_path):
    add_pool(server, 10)
    out = tmp_path / "raw"
    run(out, scrape_params(limit=4))
    assert len(check_output(out)) == 4
    first = set(server.image_gets())
    c = run(out, scrape_params(limit=10))
    recs = check_output(out)
    assert [r["id"] for r in recs] == [f"flickr-{1000 + i}" for i in range(10)]
    second = server.image_gets()[len(first):]
    assert sorted(second) == [str(1000 + i) for i in range(4, 10)]  # only the new ones
    assert c["skipped_existing"] == 4 and c["downloaded"] == 6
    n = len(server.image_gets())
    c = run(out, scrape_params(limit=3))
    assert [r["id"] for r in check_output(out)] == ["flickr-1000", "flickr-1001", "flickr-1002"]
    assert len(server.image_gets()) == n and c["downloaded"] == 0


# --------------------------------------------------------------------------- failures
def test_missing_key_fails_fast_without_a_request(server, tmp_path, monkeypatch):
    monkeypatch.delenv("FLICKR_API_SECRET")
    t = time.monotonic()
    with pytest.raises(flickr.FlickrSetupError, match="FLICKR_API_SECRET"):
        run(tmp_path / "raw", scrape_params())
    assert time.monotonic() - t < 2 and server.log == []


@pytest.mark.parametrize("what", ["key", "secret"])
def test_rejected_credentials_fail_fast_with_a_clear_message(server, tmp_path, monkeypatch, what):
    add_pool(server, 3)
    bad = "WRONG-" + what.upper() + "-77aa"
    monkeypatch.setenv("FLICKR_API_KEY" if what == "key" else "FLICKR_API_SECRET", bad)
    t = time.monotonic()
    with pytest.raises(flickr.FlickrSetupError) as ei:
        run(tmp_path / "raw", scrape_params())
    assert time.monotonic() - t < 3
    msg = str(ei.value)
    assert "rejected the API credentials" in msg and "FLICKR_API_KEY" in msg
    assert ("100" if what == "key" else "96") in msg
    assert bad not in msg and server.secret not in msg
    assert not (tmp_path / "raw" / "manifest.jsonl").exists()


def test_group_not_found(server, tmp_path):
    add_pool(server, 2)
    with pytest.raises(flickr.FlickrSetupError, match="not found"):
        run(tmp_path / "raw", scrape_params(group="https://www.flickr.com/groups/nosuchgroup/"))
    with pytest.raises(flickr.FlickrSetupError, match="Group not found"):
        run(tmp_path / "raw", scrape_params(group="999@N99"))


def test_transient_errors_are_retried(server, tmp_path):
    add_pool(server, 8)
    server.fail("api", "flickr.urls.lookupGroup", 503)
    server.fail("api", "flickr.groups.pools.getPhotos", 500, 429, "drop")
    server.fail("img", "1001", 500, 429)
    server.fail("img", "1002", "drop")  # connection closed halfway through the body
    server.fail("img", "1003", 502, "drop", 503)
    out = tmp_path / "raw"
    counts = run(out, scrape_params(max_tries=4))
    assert len(check_output(out)) == 8 and counts["failed"] == 0
    assert [r["status"] for r in server.requests("img", "1003")] == [502, "drop", 503, 200]
    assert [r["status"] for r in server.requests("img", "1002")] == ["drop", 200]


def test_timeouts_are_retried(server, tmp_path):
    add_pool(server, 3)
    server.hang_s = 0.6
    server.fail("api", "flickr.groups.pools.getPhotos", "hang")
    server.fail("img", "1001", "hang")
    out = tmp_path / "raw"
    counts = run(out, scrape_params(timeout_s=0.25))
    assert len(check_output(out)) == 3 and counts["failed"] == 0
    assert len(server.requests("img", "1001")) == 2
    assert len(server.requests("api", "flickr.groups.pools.getPhotos")) == 2


def test_listing_failure_keeps_finished_downloads(server, tmp_path):
    add_pool(server, 8)
    server.fail("api", "flickr.groups.pools.getPhotos", None, 500, 500)  # page 2 never comes
    out = tmp_path / "raw"
    with pytest.raises(flickr.FlickrSetupError, match="unreachable"):
        run(out, scrape_params(max_tries=2))
    done = set(manifest.read_by_id(out / "manifest.jsonl"))
    assert done and done <= {f"flickr-{1000 + i}" for i in range(5)}
    n = len(server.image_gets())
    run(out, scrape_params())
    assert len(check_output(out)) == 8
    assert sorted(server.image_gets()[n:]) == sorted(
        str(1000 + i) for i in range(8) if f"flickr-{1000 + i}" not in done)


def test_cli_reports_setup_errors_without_traceback(server, tmp_path, monkeypatch, capsys):
    from spidergan import cli

    monkeypatch.delenv("FLICKR_API_KEY")
    (tmp_path / "params.yaml").write_text(
        "scrape:\n  source: flickr\n  flickr:\n    group: 1@N01\n")
    rc = cli.main(["--params", str(tmp_path / "params.yaml"), "scrape",
                   "--out", str(tmp_path / "raw"), "--metrics", str(tmp_path / "m.json")])
    err = capsys.readouterr().err
    assert rc == 1 and "FLICKR_API_KEY" in err and "Traceback" not in err


def test_persistent_failures_are_recorded_with_reason(server, tmp_path):
    add_pool(server, 4)
    server.fail("img", "1001", 500, 500, 500, 500)
    server.fail("img", "1002", "drop", "drop", "drop")
    server.gone.add("1003")  # listed, but its file answers 404
    out = tmp_path / "raw"
    counts = run(out, scrape_params(max_tries=3))
    assert [r["id"] for r in check_output(out)] == ["flickr-1000"]
    rej = manifest.read_by_id(out / "rejects.jsonl")
    assert rej["flickr-1001"]["reason"] == "download_failed"
    assert "3 tries" in rej["flickr-1001"]["detail"] and "500" in rej["flickr-1001"]["detail"]
    assert "3 tries" in rej["flickr-1002"]["detail"]
    assert "404" in rej["flickr-1003"]["detail"]
    assert len(server.requests("img", "1001")) == 3 and len(server.requests("img", "1003")) == 1
    assert counts["failed"] == 3
    # a later run tries the failed ones again (the server has recovered)
    server.gone.clear()
    counts = run(out, scrape_params())
    assert len(check_output(out)) == 4 and counts["failed"] == 0
    assert manifest.read(out / "rejects.jsonl") == []


def png_bomb(w=40000, h=40000) -> bytes:
    """A 100-byte PNG whose header claims w x h pixels."""
    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def encoded(im: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue()


def test_image_validation_rejects_and_converts(server, tmp_path):
    good = jpeg(128, 96)
    d = {"l": (128, 96)}
    server.add_photo(1, {"l": good})
    server.add_photo(2, {"l": good[: len(good) // 2]}, dims=d)  # truncated JPEG
    server.add_photo(3, {"l": b"<!doctype html><html><body>Rate limit</body></html>"}, dims=d)
    server.add_photo(4, {"l": png_bomb()}, dims=d)
    server.add_photo(5, {"l": jpeg(128, 96, mode="L")})
    server.add_photo(6, {"l": jpeg(128, 96, mode="CMYK")})
    sixteen = Image.fromarray((np.arange(96 * 128).reshape(96, 128) * 5).astype(np.uint16))
    server.add_photo(7, {"l": encoded(sixteen, "PNG")})
    rgba = Image.new("RGBA", (128, 96), (255, 0, 0, 0))
    server.add_photo(8, {"l": encoded(rgba, "PNG")})
    server.add_group(GID, list(range(1, 9)), url=GROUP_URL)
    out = tmp_path / "raw"
    counts = run(out, scrape_params())
    recs = {r["id"]: r for r in check_output(out)}
    assert sorted(recs) == ["flickr-1", "flickr-5", "flickr-6", "flickr-7", "flickr-8"]
    assert recs["flickr-1"]["sha256"] == hashlib.sha256(good).hexdigest()  # kept byte for byte
    assert recs["flickr-5"]["file"].endswith(".jpg") and recs["flickr-7"]["file"].endswith(".png")
    white = np.asarray(Image.open(out / recs["flickr-8"]["file"]))
    assert (white == 255).all()  # transparent red flattened on white
    rej = manifest.read_by_id(out / "rejects.jsonl")
    assert rej["flickr-2"]["reason"] == "corrupt"
    assert rej["flickr-3"]["reason"] == "not_an_image"
    assert rej["flickr-4"]["reason"] == "too_large"
    assert counts["rejected"] == 3 and counts["downloaded"] == 8
    # content rejections are final: a re-run does not fetch them again
    n = len(server.image_gets())
    run(out, scrape_params())
    assert len(server.image_gets()) == n
    assert sorted(manifest.read_by_id(out / "rejects.jsonl")) == ["flickr-2", "flickr-3", "flickr-4"]


def test_secrets_reach_no_file_log_or_output(server, tmp_path, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    add_pool(server, 6)
    server.fail("api", "flickr.groups.pools.getPhotos", 500)
    server.fail("img", "1001", 429, "drop")
    server.fail("img", "1002", 500, 500)
    out, metrics = tmp_path / "raw", tmp_path / "metrics.json"
    run(out, scrape_params(max_tries=2), metrics)
    monkey_bad = os.environ["FLICKR_API_SECRET"]
    os.environ["FLICKR_API_SECRET"] = "other-secret"
    try:
        with pytest.raises(flickr.FlickrSetupError) as ei:
            run(tmp_path / "raw2", scrape_params())
    finally:
        os.environ["FLICKR_API_SECRET"] = monkey_bad
    captured = capfd.readouterr()
    texts = {"log": caplog.text, "stdout": captured.out, "stderr": captured.err,
             "error": str(ei.value) + repr(ei.value)}
    for p in list(out.rglob("*")) + [metrics]:
        if p.is_file():
            texts[str(p)] = p.read_bytes().decode("latin-1")
    assert "retrying" in caplog.text  # the log did see the failures
    for name, text in texts.items():
        for secret in (server.api_key, server.secret, "other-secret"):
            assert secret not in text, f"{secret} leaked into {name}"


def test_rest_url_from_environment_and_no_home_token_cache(server, tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    add_pool(server, 2)
    run(tmp_path / "raw", scrape_params())
    assert server.requests("api", "flickr.groups.pools.getPhotos")
    assert list(home.iterdir()) == []  # no ~/.flickr token cache


# --------------------------------------------------------------------------- kill and resume
DRIVER = """
import json, sys
from spidergan import env, params, scrape
env.setup()
p = params.from_dict(json.loads(sys.argv[1])).scrape
scrape.run(p, seed=0, out=sys.argv[2], metrics_path=None)
"""


def test_kill_9_and_resume(server, tmp_path):
    add_pool(server, 12)
    # the first four come at once; the others pause halfway through their bodies for longer
    # than the test waits, so the kill lands while two downloads are half written
    server.delays = {str(1000 + i): 8.0 for i in range(4, 12)}
    out = tmp_path / "raw"
    cfg = {"scrape": {"source": "flickr", "min_side": 48,
                      "flickr": {"group": GROUP_URL, "per_page": 5, "concurrency": 2,
                                 "backoff_s": 0.005, "timeout_s": 20.0}}}
    envv = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, json.dumps(cfg), str(out)], env=envv,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            n = len(manifest.read(out / "manifest.jsonl"))
            parts = list((out / "images").glob(".*.part")) if (out / "images").exists() else []
            if n >= 4 and len(parts) == 2:
                break
            time.sleep(0.02)
        else:
            pytest.fail("the scrape did not get going")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done = set(manifest.read_by_id(out / "manifest.jsonl"))
    assert done == {f"flickr-{1000 + i}" for i in range(4)}
    assert len(list((out / "images").glob(".*.part"))) == 2  # it died mid-download
    first = len(server.image_gets())
    server.delays = {}
    counts = run(out, params.from_dict(cfg).scrape)
    recs = check_output(out)  # no part or temp file left, every image complete
    assert [r["id"] for r in recs] == [f"flickr-{1000 + i}" for i in range(12)]
    again = server.image_gets()[first:]
    assert sorted(again) == [str(1000 + i) for i in range(4, 12)]  # only the missing ones
    assert counts["skipped_existing"] == 4 and counts["downloaded"] == 8
