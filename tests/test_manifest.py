import json

import pytest

from spidergan import atomic, manifest


def test_write_read_round_trip(tmp_path):
    recs = [{"id": f"a{i}", "v": i} for i in range(5)]
    assert manifest.write(tmp_path / "m.jsonl", recs) == 5
    assert manifest.read(tmp_path / "m.jsonl") == recs
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left


def test_missing_manifest_is_empty(tmp_path):
    assert manifest.read(tmp_path / "none.jsonl") == []


def test_appender_repairs_torn_line_and_latest_wins(tmp_path):
    path = tmp_path / "m.jsonl"
    with manifest.Appender(path) as a:
        a.append({"id": "x", "v": 1})
        a.append({"id": "y", "v": 1})
    with open(path, "a") as f:
        f.write('{"id": "z", "v"')  # a kill mid-write
    assert [r["id"] for r in manifest.read(path)] == ["x", "y"]
    with manifest.Appender(path) as a:
        a.append({"id": "x", "v": 2})
    assert manifest.read_by_id(path) == {"x": {"id": "x", "v": 2}, "y": {"id": "y", "v": 1}}
    assert all(json.loads(line) for line in path.read_text().splitlines())


def test_corrupt_line_in_the_middle_raises(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"id": "a"}\nnot json\n{"id": "b"}\n')
    with pytest.raises(ValueError, match=":2: corrupt"):
        manifest.read(path)


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "out.json"
    atomic.write_json(target, {"ok": 1})
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert json.loads(target.read_text()) == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_atomic_outputs_get_normal_permissions(tmp_path):
    import os

    atomic.write_text(tmp_path / "a.txt", "x")
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o666 & ~umask
