"""The review server's API: listings, decisions, token, path safety, thumbnails, 44,000 items,
and the `spidergan review` command surviving a kill without losing decisions."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from conftest import ROOT, venv_env
from review_fixture import big_manifests, make_project
from spidergan import manifest
from spidergan.review import decisions as dec
from spidergan.review.app import create_app
from spidergan.review.data import inside


@pytest.fixture
def project(tmp_path):
    return make_project(tmp_path / "proj")


@pytest.fixture
def client(project):
    app = create_app(project, token="tok-123")
    with TestClient(app, base_url="http://127.0.0.1:8765") as c:
        yield c
    app.state.log.close()


H = {"X-Review-Token": "tok-123"}


def test_index_embeds_token_and_locks_down_the_page(client):
    r = client.get("/")
    assert r.status_code == 200
    assert 'name="review-token" content="tok-123"' in r.text
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["x-frame-options"] == "DENY"
    assert client.get("/static/app.js").status_code == 200
    assert "http" not in re.sub(r"https?://(127\.0\.0\.1|localhost)", "", r.text)  # nothing from a CDN


def test_listings_counts_and_filters(client):
    d = client.get("/api/detections").json()
    assert [it["id"] for it in d["items"]] == ["img-0", "img-1", "img-2", "img-3"]  # the error record is left out
    assert d["counts"] == {"total": 6, "undecided": 6, "accept": 0, "reject": 0}
    low = client.get("/api/detections", params={"max_conf": 0.5}).json()
    assert [it["id"] for it in low["items"]] == ["img-2"]
    assert [b["match"] for b in low["items"][0]["boxes"]] == [False, True]
    c = client.get("/api/crops").json()
    assert c["matching"] == 6 and c["items"][0]["key"] == "img-0-0"
    p = client.get("/api/pairs").json()
    assert [it["distance"] for it in p["items"]] == [0.05, 0.25, 0.45]  # nearest first
    assert client.get("/api/crops", params={"status": "copy"}).status_code == 400


def test_decide_needs_the_session_token(client, project):
    body = {"kind": "crop", "key": "img-0-0", "decision": "accept"}
    assert client.post("/api/decide", json=body).status_code == 403
    assert client.post("/api/decide", json=body, headers={"X-Review-Token": "wrong"}).status_code == 403
    assert not (project / "data/review/decisions.jsonl").exists()
    r = client.post("/api/decide", json=body, headers=H)
    assert r.status_code == 200 and r.json()["record"]["id"] == "img-0-0"
    assert r.json()["before"] == "0" and r.json()["version"] == client.get("/api/version").json()["version"] != "0"
    assert dec.latest(project / "data/review/decisions.jsonl")[("crop", "img-0-0")]["decision"] == "accept"


def test_decisions_are_recorded_with_server_side_facts(client, project):
    # the client cannot rewrite orig_box or image_id: they come from detections.jsonl
    r = client.post("/api/decide", headers=H, json={
        "kind": "detection", "key": "img-2:1", "decision": "accept", "box": [380, 215, 475, 305],
        "orig_box": [0, 0, 1, 1], "image_id": "evil"})
    assert r.status_code == 200, r.text
    rec = dec.latest(project / "data/review/decisions.jsonl")[("detection", "img-2:1")]
    assert rec["orig_box"] == [390.0, 220.0, 470.0, 300.0] and rec["box"] == [380, 215, 475, 305]
    assert rec["image_id"] == "img-2"
    # a later reject without a box keeps the adjusted box
    client.post("/api/decide", headers=H, json={"kind": "detection", "key": "img-2:1", "decision": "reject"})
    rec = dec.latest(project / "data/review/decisions.jsonl")[("detection", "img-2:1")]
    assert rec["box"] == [380, 215, 475, 305] and rec["decision"] == "reject"
    listed = client.get("/api/detections", params={"status": "reject"}).json()
    assert listed["counts"]["reject"] == 1 and listed["items"][0]["boxes"][1]["box"] == [380, 215, 475, 305]
    # a box dragged past the image edge is clipped to it (img-2 is 520x340)
    client.post("/api/decide", headers=H, json={"kind": "detection", "key": "img-2:0", "decision": "accept",
                                                "box": [-20, 100, 600, 400]})
    assert dec.latest(project / "data/review/decisions.jsonl")[("detection", "img-2:0")]["box"] == [0, 100, 520, 340]
    pair = client.post("/api/decide", headers=H, json={"kind": "pair", "key": "data/eval/fakes/fake-0.png",
                                                      "decision": "copy"}).json()["record"]
    assert pair["real"] == "data/crops/images/img-0-0.png"
    for bad, code in ((({"kind": "detection", "key": "img-2:9", "decision": "accept"}), 404),
                      ({"kind": "crop", "key": "nope", "decision": "accept"}, 404),
                      ({"kind": "crop", "key": "img-0-0", "decision": "copy"}, 400),
                      ({"kind": "detection", "key": "img-0:0", "decision": "accept", "box": [9, 9, 1, 1]}, 400)):
        assert client.post("/api/decide", headers=H, json=bad).status_code == code, bad


def test_no_pairs_yet(tmp_path):
    app = create_app(make_project(tmp_path / "p", pairs=False))
    with TestClient(app, base_url="http://127.0.0.1") as c:
        r = c.get("/api/pairs").json()
    assert r["items"] == [] and r["message"] == "no pairs yet: run the evaluate stage"


def test_only_loopback_host_headers_are_answered(client):
    assert client.get("/api/version", headers={"Host": "attacker.example:8765"}).status_code == 421
    assert client.get("/api/version", headers={"Host": "localhost:8765"}).status_code == 200


def test_path_traversal_is_refused(client, project, tmp_path):
    secret = tmp_path / "secret.png"
    Image.new("RGB", (32, 32), (255, 0, 0)).save(secret)
    # manifests that point outside the data folders, in every spelling
    crops = manifest.read(project / "data/crops/manifest.jsonl")
    evil = ["../../secret.png", str(secret), "images/../../../secret.png", "..%2F..%2Fsecret.png"]
    os.symlink(secret, project / "data/crops/images/link.png")
    evil.append("images/link.png")
    manifest.write(project / "data/crops/manifest.jsonl",
                   crops + [dict(crops[0], id=f"evil{i}", file=f) for i, f in enumerate(evil)])
    with open(project / "data/eval/pairs.jsonl", "a") as f:
        for i, fake in enumerate(["../secret.png", str(secret), "data/../../secret.png", "models/../../secret.png"]):
            f.write(json.dumps({"fake": fake, "real": "data/crops/images/img-0-0.png", "distance": 9 + i}) + "\n")
    for i in range(len(evil)):
        assert client.get("/img/crop", params={"id": f"evil{i}"}).status_code == 404
    for n in range(3, 7):
        assert client.get("/img/pair", params={"n": n, "side": "fake"}).status_code == 404
    assert client.get("/img/pair", params={"n": 0, "side": "../../secret"}).status_code == 404
    for url in ["/img/raw?id=../../secret.png", "/img/raw?id=%2E%2E%2F%2E%2E%2Fsecret.png",
                f"/img/raw?id={secret}", "/static/../app.py", "/static/%2e%2e/app.py",
                "/static/..%2Fapp.py", "/static/%2e%2e%2f%2e%2e%2fdecisions.py", "//etc/passwd"]:
        r = client.get(url)
        assert r.status_code == 404, url
        assert b"import" not in r.content and b"root:" not in r.content
    # and directly: only existing images inside data/ or models/
    roots = [project / "data", project / "models"]
    assert inside("data/crops/images/img-0-0.png", roots) is not None
    for p in ["../secret.png", str(secret), "data/../../secret.png", "data/crops/images/link.png",
              "data/crops/manifest.jsonl", "data/%2E%2E/%2E%2E/secret.png", "/etc/passwd"]:
        assert inside(p, roots) is None, p


def test_thumbnails_are_made_once_and_revalidated(client, project):
    thumbs = project / ".spidergan" / "thumbs"
    r = client.get("/img/raw", params={"id": "img-1", "s": 256})
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    made = sorted(thumbs.rglob("*.jpg"))
    assert len(made) == 1
    with Image.open(made[0]) as im:
        assert max(im.size) == 256 and im.size == (192, 256)  # 360x480 source, aspect kept
    mtime = made[0].stat().st_mtime_ns
    again = client.get("/img/raw", params={"id": "img-1", "s": 200}, headers={"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304  # 200 rounds up to the same 256 thumbnail
    assert sorted(thumbs.rglob("*.jpg")) == made and made[0].stat().st_mtime_ns == mtime
    # a changed source gets a new thumbnail
    src = project / "data/raw/images/img-1.jpg"
    Image.new("RGB", (360, 480), (200, 10, 10)).save(src)
    r2 = client.get("/img/raw", params={"id": "img-1", "s": 256}, headers={"If-None-Match": r.headers["etag"]})
    assert r2.status_code == 200 and r2.headers["etag"] != r.headers["etag"]
    assert len(list(thumbs.rglob("*.jpg"))) == 2
    assert client.get("/img/crop", params={"id": "img-3-0", "s": 1024}).status_code == 200
    assert client.get("/img/pair", params={"n": 1, "side": "real"}).status_code == 200


def test_44000_items_are_paginated_and_fast(client, project):
    t = time.perf_counter()
    big_manifests(project, 44_000)
    client.get("/api/detections")  # first call parses the manifests (cached afterwards)
    client.get("/api/crops")
    print(f"writing and parsing 3 x 44,000 records: {time.perf_counter() - t:.2f}s")
    for api in ("/api/detections", "/api/crops"):
        t = time.perf_counter()
        first = client.get(api, params={"per_page": 200}).json()
        last = client.get(api, params={"start": 43_900, "per_page": 200}).json()
        dt = time.perf_counter() - t
        print(f"{api}: two pages of 44,000 in {dt:.3f}s")
        assert len(first["items"]) == 200 and first["matching"] == 44_000 and first["next_start"] == 200
        assert len(last["items"]) == 100 and last["next_start"] is None and last["prev_start"] == 43_700
        assert dt < 3.0, f"{api}: two pages of 44,000 took {dt:.2f}s"
    # windows are anchored on positions: deciding under a status filter skips nothing
    for i in range(3):
        client.post("/api/decide", headers=H, json={"kind": "crop", "key": f"p{i:06d}-0", "decision": "reject"})
    und = client.get("/api/crops", params={"status": "undecided", "start": 0, "per_page": 2}).json()
    assert [it["id"] for it in und["items"]] == ["p000003-0", "p000004-0"] and und["matching"] == 43_997
    assert client.get("/api/crops", params={"per_page": 501}).status_code == 422


def test_cli_serves_and_a_kill_loses_no_decision(project):
    env = venv_env({"SPIDERGAN_ROOT": str(project)}, pythonpath=ROOT)
    proc = subprocess.Popen([sys.executable, "-m", "spidergan.cli", "review", "--port", "0"], cwd=project,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = proc.stdout.readline()
        m = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert m, line
        url = m.group(0)
        token = re.search(r'name="review-token" content="([^"]+)"', httpx.get(url).text).group(1)
        for i, key in enumerate(["img-0-0", "img-0-1", "img-1-0", "img-2-0", "img-2-1", "img-3-0"]):
            r = httpx.post(url + "api/decide", headers={"X-Review-Token": token},
                           json={"kind": "crop", "key": key, "decision": "reject" if i % 2 else "accept"})
            assert r.status_code == 200, r.text
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    got = dec.latest(project / "data/review/decisions.jsonl")
    assert len(got) == 6 and got[("crop", "img-0-1")]["decision"] == "reject"


def test_names_people_know_search_and_no_spider_mark(client, project):
    """Photos are named by their original file or Flickr title, found by any part of it, and a
    whole image can be marked "no spider" (and cleared again)."""
    raw = manifest.read(project / "data/raw/manifest.jsonl")
    raw[0]["provenance"] = {"path": "holiday/IMG_4711.jpg", "folder": "/photos"}
    raw[1]["provenance"] = {"photo_id": "5550001", "title": "Garden cross spider",
                            "owner_name": "A. Walker", "page_url": "https://www.flickr.com/photos/x/5550001"}
    manifest.write(project / "data/raw/manifest.jsonl", raw)
    items = {it["id"]: it for it in client.get("/api/detections").json()["items"]}
    assert items["img-0"]["name"] == "holiday/IMG_4711.jpg"
    assert items["img-1"]["name"] == "Garden cross spider (A. Walker)"
    assert items["img-1"]["page"].endswith("/5550001") and items["img-2"]["name"] == "img-2"
    for q, want in (("img_4711", ["img-0"]), ("walker", ["img-1"]), ("5550001", ["img-1"]),
                    ("img-3", ["img-3"]), ("nothing like it", [])):
        got = client.get("/api/detections", params={"q": q}).json()
        assert [it["id"] for it in got["items"]] == want, q
    r = client.post("/api/decide", headers=H, json={"kind": "image", "key": "img-2", "decision": "no_spider"})
    assert r.status_code == 200, r.text
    assert client.get("/api/detections").json()["items"][2]["no_spider"] is True
    assert dec.no_spider_images(dec.latest(project / "data/review/decisions.jsonl")) == {"img-2"}
    assert client.post("/api/decide", headers=H, json={"kind": "image", "key": "nope",
                                                        "decision": "no_spider"}).status_code == 404
    client.post("/api/decide", headers=H, json={"kind": "image", "key": "img-2", "decision": "clear",
                                                 "undo": True})
    assert client.get("/api/detections").json()["items"][2]["no_spider"] is False
