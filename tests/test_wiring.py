"""dvc.yaml is the one place stages are wired, and it is complete: for every stage, each
spidergan source file its command can execute is a dep (a folder dep covers what is under it),
and each params key it reads is tracked. Otherwise editing that file or key leaves
`dvc repro` saying "up to date" over stale outputs.

Keys read: the stage script loads params.yaml (`p = params.load()`) and hands the library
sections (`p.detect`) or leaves (`p.scrape.source`); a section's fields are then read wherever
the library takes it as an argument annotated with its class (tests/code_graph.py). The library
itself never loads params.yaml, so the script is the one way in (checked below)."""

from __future__ import annotations

import ast
import dataclasses
import shlex
import sys
import typing
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
import code_graph as g  # noqa: E402

from spidergan import params  # noqa: E402

DVC = yaml.safe_load((g.ROOT / "dvc.yaml").read_text())["stages"]


def stage_script(stage: dict) -> Path:
    words = shlex.split(stage["cmd"])
    assert words[0] == "python" and words[1].startswith("stages/"), stage["cmd"]
    return Path(words[1])


def covered(path: str, deps: list[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps)


def _leaves(cls: type, prefix: str) -> set[str]:
    out = set()
    for f in dataclasses.fields(cls):
        t = typing.get_type_hints(cls)[f.name]
        key = f"{prefix}.{f.name}" if prefix else f.name
        out |= _leaves(t, key) if dataclasses.is_dataclass(t) else {key}
    return out


def _expand(cls: type, prefix: str, reads: dict) -> set[str]:
    """Leaf keys read of the section `cls` handed to the library at `prefix`."""
    out = set()
    for r in reads.get(cls.__name__, ()):
        if r == g.WHOLE:
            out |= _leaves(cls, prefix)
            continue
        path = r.removesuffix("." + g.WHOLE)
        sub = g._section_at(cls, path.split("."))
        key = f"{prefix}.{path}"
        if r.endswith(g.WHOLE):
            out |= _leaves(sub, key) if sub else {key}
        elif sub is not None:  # the sub-section itself is handed on
            out |= _expand(sub, key, reads)
        else:
            out.add(key)
    return out


def keys_read(script: Path) -> set[str]:
    """Dotted params keys a stage reads, through its script and the library."""
    tree = ast.parse((g.ROOT / script).read_text())
    loads = [n for n in ast.walk(tree) if isinstance(n, ast.Assign)
             and isinstance(n.value, ast.Call) and g._chain(n.value.func) == ["params", "load"]]
    assert len(loads) == 1, f"{script}: expected one `p = params.load()`"
    var = loads[0].targets[0].id
    reads: dict = {}
    for f in g.closure(script):
        for cls, fields in g.section_reads(g.ROOT / f).items():
            reads.setdefault(cls, set()).update(fields)
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and not isinstance(getattr(node, "_parent", None), ast.Attribute):
            ch = g._chain(node)
            if ch and ch[0] == var:
                sub = g._section_at(params.Params, ch[1:])
                out |= _expand(sub, ".".join(ch[1:]), reads) if sub else {".".join(ch[1:])}
        for child in ast.iter_child_nodes(node):
            child._parent = node
    return out


STAGES = sorted(DVC)


def test_every_stage_runs_a_stage_script():
    for name, st in DVC.items():
        assert (g.ROOT / stage_script(st)).is_file(), name


@pytest.mark.parametrize("name", STAGES)
def test_deps_cover_the_code_a_stage_runs(name):
    st = DVC[name]
    script = stage_script(st)
    deps = [str(d) for d in st.get("deps", [])]
    missing = sorted(str(f) for f in g.closure(script) | {script} if not covered(str(f), deps))
    assert not missing, f"stage {name}: deps lack {missing}"


@pytest.mark.parametrize("name", STAGES)
def test_params_cover_the_keys_a_stage_reads(name):
    st = DVC[name]
    tracked = [str(k) for k in st.get("params", [])]
    read = keys_read(stage_script(st))
    assert read, f"stage {name}: reads no params?"
    missing = sorted(k for k in read if not covered(k.replace(".", "/"), [t.replace(".", "/") for t in tracked]))
    assert not missing, f"stage {name}: params lack {missing}"
    # and nothing tracked that the stage never reads: it would re-run the stage for nothing
    unread = sorted(t for t in tracked if not any(k == t or k.startswith(t + ".") for k in read))
    assert not unread, f"stage {name}: params track keys it never reads: {unread}"


def _called_functions(script: Path):
    """(module name, function name) of the library calls in a stage script."""
    tree = ast.parse((g.ROOT / script).read_text())
    alias = {}
    for n in ast.walk(tree):
        if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("spidergan"):
            for a in n.names:
                alias[a.asname or a.name] = f"{n.module}.{a.name}"
    for n in ast.walk(tree):
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and \
                isinstance(n.func.value, ast.Name) and n.func.value.id in alias:
            mod = alias[n.func.value.id]
            if g.module_file(mod) and mod not in ("spidergan.env", "spidergan.params"):
                yield mod, n.func.attr


@pytest.mark.parametrize("name", STAGES)
def test_paths_are_given_by_the_stage_script(name):
    """No path default hidden in the stage function: the script names every path, once."""
    for mod, fn in _called_functions(stage_script(DVC[name])):
        tree = ast.parse(g.module_file(mod).read_text())
        f = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == fn)
        defaults = f.args.defaults + [d for d in f.args.kw_defaults if d is not None]
        paths = [d.value for d in defaults if isinstance(d, ast.Constant)
                 and isinstance(d.value, str) and "/" in d.value]
        assert not paths, f"{mod}.{fn} has path defaults {paths}"


def test_library_never_loads_params_yaml():
    """Else a stage could read keys its script does not hand over, unseen by the test above."""
    for f in g.PKG.rglob("*.py"):
        if f.name in ("params.py", "cli.py"):
            continue
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Call):
                ch = g._chain(node.func) if isinstance(node.func, ast.Attribute) else None
                assert ch not in (["params", "load"], ["params", "from_dict"]), f


def test_the_analysis_sees_a_read(tmp_path):
    """The static read-finder on a hand-written case: an annotated argument, an alias of a
    sub-section, a section kept on self, and to_dict (every field)."""
    src = g.ROOT / "spidergan" / "_wiring_probe.py"
    src.write_text(
        "from spidergan.params import DetectParams, MaskParams, CropParams, to_dict\n"
        "def f(p: DetectParams):\n"
        "    sp = p.selftrain\n"
        "    return p.conf, sp.epochs\n"
        "class K:\n"
        "    def __init__(self, mp: MaskParams):\n"
        "        self.q = mp\n"
        "    def g(self):\n"
        "        return self.q.grabcut.rim\n"
        "def h(c: CropParams):\n"
        "    return to_dict(c)\n")
    try:
        reads = g.section_reads(src)
    finally:
        src.unlink()
        g.section_reads.cache_clear()
    assert reads == {"DetectParams": {"conf", "selftrain"}, "SelftrainParams": {"epochs"},
                     "MaskParams": {"grabcut.rim"}, "CropParams": {g.WHOLE}}
