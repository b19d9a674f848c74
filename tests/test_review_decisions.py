"""The decisions log that the review app writes and detect/crop read."""

import json
import os
import threading

import pytest

from spidergan.review import decisions as dec


def det(key, decision, box=(10, 10, 50, 60), orig=None, **kw):
    return {"kind": "detection", "key": key, "decision": decision, "box": list(box),
            "orig_box": list(orig or box), **kw}


def test_latest_wins_undo_reappends_and_clear_removes(tmp_path):
    p = tmp_path / "review" / "decisions.jsonl"
    dec.append(p, det("a:0", "accept"))
    dec.append(p, {"kind": "crop", "key": "a-0", "decision": "reject"})
    dec.append(p, det("a:0", "reject"))
    dec.append(p, det("a:0", "accept", undo=True))  # undo of the reject: back to accept
    dec.append(p, {"kind": "crop", "key": "a-0", "decision": "clear", "undo": True})  # back to none
    dec.append(p, {"kind": "pair", "key": "data/eval/f.png", "real": "data/r.png", "decision": "copy"})
    got = dec.latest(p)
    assert set(got) == {("detection", "a:0"), ("pair", "data/eval/f.png")}
    assert got[("detection", "a:0")]["decision"] == "accept"
    assert got[("detection", "a:0")]["image_id"] == "a"
    assert got[("pair", "data/eval/f.png")]["fake"] == "data/eval/f.png"
    lines = p.read_text().splitlines()
    assert len(lines) == 6  # full history, one line per decision
    assert all(isinstance(json.loads(line)["ts"], float) for line in lines)
    assert dec.verdicts(got, "pair") == {"data/eval/f.png": "copy"}


@pytest.mark.parametrize("record, message", [
    ({"kind": "mask", "key": "x", "decision": "accept"}, "kind must be"),
    ({"kind": "crop", "key": "", "decision": "accept"}, "key must be"),
    ({"kind": "crop", "key": "x", "decision": "copy"}, "crop decision must be"),
    ({"kind": "pair", "key": "x", "decision": "accept"}, "pair decision must be"),
    ({"kind": "detection", "key": "img", "decision": "accept", "box": [0, 0, 1, 1]}, "image_id>:<box index"),
    ({"kind": "detection", "key": "img:0", "decision": "accept", "box": [5, 0, 1, 1]}, "x0 < x1"),
    ({"kind": "detection", "key": "img:0", "decision": "accept", "box": [0, 0, 1]}, r"\[x0, y0, x1, y1\]"),
    ({"kind": "detection", "key": "img:0", "decision": "accept", "box": [0, 0, float("nan"), 1]}, "finite"),
    ({"kind": "detection", "key": "img:0", "image_id": "other", "decision": "accept", "box": [0, 0, 1, 1]},
     "does not match"),
])
def test_invalid_records_are_refused_and_not_written(tmp_path, record, message):
    p = tmp_path / "d.jsonl"
    with pytest.raises(dec.DecisionError, match=message):
        dec.append(p, record)
    assert not p.exists() or p.read_text() == ""


def test_torn_last_line_is_ignored_and_repaired_on_next_append(tmp_path):
    p = tmp_path / "d.jsonl"
    dec.append(p, det("a:0", "accept"))
    with open(p, "a") as f:
        f.write('{"kind": "detection", "key": "a:1", "deci')  # the server was killed mid-write
    assert list(dec.latest(p)) == [("detection", "a:0")]
    dec.append(p, det("a:1", "reject"))
    assert dec.latest(p)[("detection", "a:1")]["decision"] == "reject"
    assert all(json.loads(line) for line in p.read_text().splitlines())


def test_detection_decisions_apply_to_boxes():
    boxes = [{"box": [10, 10, 50, 50], "conf": 0.9, "cls": 0},
             {"box": [100, 100, 150, 150], "conf": 0.4, "cls": 0},
             {"box": [200, 10, 260, 70], "conf": 0.8, "cls": 0},
             {"box": [300, 10, 360, 70], "conf": 0.7, "cls": 0}]
    state = dec.fold([
        dec.validate(det("im:0", "accept", box=(8, 12, 55, 52), orig=(10, 10, 50, 50))),  # dragged
        dec.validate(det("im:1", "reject", box=(100, 100, 150, 150))),
        dec.validate(det("im:2", "reject", box=(0, 300, 40, 340))),  # about an older detection
    ])
    reviewed = dec.DetectionDecisions(state)
    out = reviewed.apply("im", boxes)
    assert [b["index"] for b in out] == [0, 1, 2, 3]
    assert [b["review"] for b in out] == ["accept", "reject", None, None]  # stale decision ignored
    assert out[0]["box"] == [8, 12, 55, 52] and out[2]["box"] == [200, 10, 260, 70]
    # a box proposed by another model (no index) matches by overlap with the proposal
    assert reviewed.match("im", [11, 10, 50, 51])["decision"] == "accept"
    assert reviewed.match("im", [10, 10, 30, 30]) is None and reviewed.match("other", [10, 10, 50, 50]) is None
    before = reviewed.digest()
    dec.fold([dec.validate(det("im:3", "accept", box=(300, 10, 360, 70)))], state)
    assert dec.DetectionDecisions(state).digest() != before


def test_hand_written_short_forms(tmp_path):
    """The file is edited by hand: short lines count, unknown decisions and junk are ignored."""
    p = tmp_path / "decisions.jsonl"
    lines = [
        {"image_id": "a", "box": [10, 10, 50, 50], "decision": "reject", "ts": 1},
        {"kind": "detection", "image_id": "a", "box": [10.2, 10, 50, 50], "decision": "accept"},
        {"kind": "crop", "id": "a-0", "decision": "reject"},
        {"kind": "detection", "image_id": "b", "box": [0, 0, 5, 5], "decision": "maybe"},
        {"kind": "detection", "image_id": "c", "box": [5, 5, 1, 1], "decision": "accept"},
        ["not", "a", "record"],
    ]
    p.write_text("".join(json.dumps(x) + "\n" for x in lines))
    state = dec.latest(p)
    assert set(state) == {("detection", "a@10,10,50,50"), ("crop", "a-0")}
    assert state[("detection", "a@10,10,50,50")]["decision"] == "accept"  # the latest line wins
    assert dec.verdicts(state, "crop") == {"a-0": "reject"}
    reviewed = dec.DetectionDecisions(state)
    assert len(reviewed) == 1 and reviewed.match("a", [10.4, 9.8, 50.3, 50.1])["decision"] == "accept"
    assert dec.latest(tmp_path / "missing.jsonl") == {}


def test_decision_log_follows_foreign_appends_and_replacement(tmp_path):
    p = tmp_path / "d.jsonl"
    log = dec.DecisionLog(p)
    assert log.snapshot() == {} and log.version() == "0"
    log.append(det("a:0", "accept"))
    v1 = log.version()
    dec.append(p, {"kind": "crop", "key": "c", "decision": "reject"})  # another process
    assert log.version() != v1
    assert set(log.snapshot()) == {("detection", "a:0"), ("crop", "c")}
    with open(p, "a") as f:  # half a line: not yet visible, not an error
        f.write('{"kind": "crop", "key": "d", "decision": "acc')
    assert ("crop", "d") not in log.snapshot()
    with open(p, "a") as f:
        f.write('ept", "ts": 1.0}\n')
    assert log.get("crop", "d")["decision"] == "accept"
    with open(p, "a") as f:  # another writer killed mid-line: our next line must not glue onto it
        f.write('{"kind": "crop", "key": "torn", "deci')
    log.append({"kind": "crop", "key": "e", "decision": "reject"})
    assert ("crop", "e") in dec.latest(p) and ("crop", "torn") not in log.snapshot()
    # replaced wholesale (git checkout, dvc checkout): re-read, and appends go to the new file
    other = tmp_path / "new.jsonl"
    dec.append(other, {"kind": "crop", "key": "z", "decision": "accept"})
    os.replace(other, p)
    assert set(log.snapshot()) == {("crop", "z")}
    log.append({"kind": "crop", "key": "y", "decision": "reject"})
    assert set(dec.latest(p)) == {("crop", "z"), ("crop", "y")}
    log.close()


def test_concurrent_appends_keep_every_line_whole(tmp_path):
    p = tmp_path / "d.jsonl"
    log = dec.DecisionLog(p)

    def work(t):
        for i in range(25):
            log.append({"kind": "crop", "key": f"t{t}-{i}", "decision": "accept"})

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.close()
    assert len(dec.latest(p)) == 100
    assert len(p.read_text().splitlines()) == 100


@pytest.mark.slow
def test_dvc_sees_a_review_as_a_changed_dependency(tmp_path):
    """A stage that lists the log among its deps is out of date after a decision (real dvc)."""
    import subprocess

    from conftest import venv_env

    repo = tmp_path / "repo"
    (repo / "data/review").mkdir(parents=True)
    (repo / "data/review/decisions.jsonl").write_text("")  # as committed in git
    (repo / "dvc.yaml").write_text(
        "stages:\n  crop:\n    cmd: python -c \"open('out.txt','w').write('x')\"\n"
        "    deps:\n      - data/review/decisions.jsonl\n    outs:\n      - out.txt\n")
    e = venv_env({"DVC_NO_ANALYTICS": "1", "SPIDERGAN_ROOT": str(repo)})

    def run(*cmd):
        r = subprocess.run(cmd, cwd=repo, env=e, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        return r.stdout

    run("git", "init", "-q")
    run("dvc", "init", "-q")
    run("dvc", "repro", "-q")
    assert "up to date" in run("dvc", "status").lower()
    dec.append(repo / "data/review/decisions.jsonl", {"kind": "crop", "key": "a-0", "decision": "reject"})
    status = run("dvc", "status")
    assert "crop" in status and "modified:" in status and "decisions.jsonl" in status
