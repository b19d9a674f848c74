"""The review page in a real browser: Debian's chromium driven by Playwright (never a
downloaded browser). Keys, undo, dragging a box corner, reload, two tabs, and the decisions
file holding the right records. Screenshots of each view are saved (and kept in
$SPIDERGAN_SCREENSHOTS when set, to look at)."""

import os
import shutil
import time
from pathlib import Path

import pytest
from PIL import Image

from review_fixture import make_project, running_server
from spidergan.review import decisions as dec
from spidergan.review.app import create_app

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason="Debian chromium missing: `make test` installs it (apt-get install chromium)")


def wait_for(cond, what, timeout=8.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def shot(page, tmp_path, name):
    path = tmp_path / f"review-{name}.png"
    page.screenshot(path=str(path))
    with Image.open(path) as im:
        assert im.size == (1400, 820)
        assert len(set(im.convert("L").resize((70, 41)).getdata())) > 20  # not a blank page
    keep = os.environ.get("SPIDERGAN_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(keep) / path.name)
    return path


def test_review_in_chromium(tmp_path):
    from playwright.sync_api import sync_playwright

    project = make_project(tmp_path / "proj")
    log_path = project / "data/review/decisions.jsonl"
    latest = lambda: dec.latest(log_path)  # noqa: E731
    app = create_app(project)
    errors = []
    with running_server(app) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        ctx = browser.new_context(viewport={"width": 1400, "height": 820})
        page = ctx.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

        # ---- load: 4 images with 6 boxes, the first box selected
        page.goto(url)
        page.wait_for_selector(".card >> nth=3")
        assert page.inner_text("#count-total") == "6 boxes"
        page.wait_for_selector(".stage .bx.sel")
        assert page.get_attribute(".stage .bx.sel", "data-key") == "img-0:0"

        # ---- keys: accept, reject, undo, move, accept
        page.keyboard.press("a")           # img-0:0 accept -> img-0:1
        page.keyboard.press("r")           # img-0:1 reject -> img-1:0
        wait_for(lambda: latest().get(("detection", "img-0:1")), "the reject")
        page.keyboard.press("u")           # undo the reject: img-0:1 undecided, selected again
        wait_for(lambda: ("detection", "img-0:1") not in latest(), "the undo")
        assert page.get_attribute(".stage .bx.sel", "data-key") == "img-0:1"
        for k in ("j", "j", "k"):          # img-1:0, img-2:0, back to img-1:0
            page.keyboard.press(k)
        assert page.get_attribute(".stage .bx.sel", "data-key") == "img-1:0"
        page.keyboard.press("a")           # img-1:0 accept -> img-2:0
        wait_for(lambda: ("detection", "img-1:0") in latest(), "the second accept")
        assert page.inner_text("#count-accept") == "2 accepted"
        assert page.inner_text("#count-undecided") == "4 undecided"

        # ---- drag the bottom-right corner of img-2:0 outwards
        assert page.get_attribute(".stage .bx.sel", "data-key") == "img-2:0"
        handle = page.locator(".stage .bx.sel .h.se").bounding_box()
        x, y = handle["x"] + handle["width"] / 2, handle["y"] + handle["height"] / 2
        page.mouse.move(x, y)
        page.mouse.down()
        page.mouse.move(x + 30, y + 20, steps=6)
        page.mouse.move(x + 60, y + 40, steps=6)
        page.mouse.up()
        rec = wait_for(lambda: latest().get(("detection", "img-2:0")), "the dragged box")
        assert rec["decision"] == "accept"
        assert rec["box"][2] > rec["orig_box"][2] + 10 and rec["box"][3] > rec["orig_box"][3] + 10
        assert rec["box"][:2] == rec["orig_box"][:2]
        page.wait_for_selector(".stage .bx.ghost")  # the detected box stays visible, dashed
        shot(page, tmp_path, "detections")

        # ---- reload: the page shows what the file says
        page.reload()
        page.wait_for_selector(".card >> nth=3")
        assert page.inner_text("#count-accept") == "3 accepted"
        assert page.locator('.card[data-i="0"] .bx.st-accept').count() == 1
        assert page.locator('.card[data-i="0"] .bx.st-undecided').count() == 1
        page.locator('.card[data-i="2"]').click()
        page.wait_for_selector('.stage .bx.ghost')  # the adjusted box came back from the server

        # ---- a second tab sees decisions made in the first (polling)
        page2 = ctx.new_page()
        page2.goto(url + "#view=crops")
        page2.wait_for_selector(".card >> nth=5")
        page.keyboard.press("2")           # first tab to crops too
        page.wait_for_selector('.view-crops .card >> nth=5')
        page.keyboard.press("r")           # img-0-0 reject -> img-0-1
        page.keyboard.press("l")           # not a key: nothing happens
        page.keyboard.press("a")           # img-0-1 accept
        page2.wait_for_selector('.card[data-key="img-0-0"].st-reject', timeout=8000)
        page2.wait_for_selector('.card[data-key="img-0-1"].st-accept', timeout=8000)
        assert page2.inner_text("#count-reject") == "1 rejected"
        page.keyboard.press("ArrowDown")   # next row is past the last crop: stays on the last
        page.keyboard.press("u")           # undo the accept of img-0-1
        wait_for(lambda: ("crop", "img-0-1") not in latest(), "the crop undo")
        page2.wait_for_selector('.card[data-key="img-0-1"].st-undecided', timeout=8000)
        # filter by status: only the undecided crops
        page.select_option("#f-status", "undecided")
        page.wait_for_selector("#page-info >> text=1–5 of 5 crops")  # (the page's CSP forbids eval)
        assert page.locator(".card").count() == 5
        page.select_option("#f-status", "all")
        page.wait_for_selector(".card >> nth=5")
        shot(page, tmp_path, "crops")
        page2.close()

        # ---- pairs: c marks a copy, o marks ok
        page.keyboard.press("3")
        page.wait_for_selector(".pair >> nth=2")
        page.keyboard.press("c")
        page.keyboard.press("o")
        wait_for(lambda: ("pair", "data/eval/fakes/fake-1.png") in latest(), "the pair decisions")
        shot(page, tmp_path, "pairs")
        browser.close()

    assert not [e for e in errors if "favicon" not in e], errors
    got = latest()
    assert {k: r["decision"] for k, r in got.items()} == {
        ("detection", "img-0:0"): "accept", ("detection", "img-1:0"): "accept",
        ("detection", "img-2:0"): "accept", ("crop", "img-0-0"): "reject",
        ("pair", "data/eval/fakes/fake-0.png"): "copy", ("pair", "data/eval/fakes/fake-1.png"): "ok"}
    history = list(dec.iter_decisions(log_path))
    assert [(r["key"], r["decision"], bool(r.get("undo"))) for r in history] == [
        ("img-0:0", "accept", False), ("img-0:1", "reject", False), ("img-0:1", "clear", True),
        ("img-1:0", "accept", False), ("img-2:0", "accept", False),
        ("img-0-0", "reject", False), ("img-0-1", "accept", False), ("img-0-1", "clear", True),
        ("data/eval/fakes/fake-0.png", "copy", False), ("data/eval/fakes/fake-1.png", "ok", False)]
    assert history[4]["orig_box"] != history[4]["box"]
