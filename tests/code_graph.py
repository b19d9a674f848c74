"""Static facts about the code, read from its syntax trees (nothing is imported or run).

- `imports(module)`: the spidergan modules a module imports, at top level or inside a function
  (a function-local import still runs when the function does, so it is a dependency and can
  close a cycle).
- `closure(script)`: every spidergan source file a script can execute, through its imports.
- `section_reads(module)`: which fields of which params section a module reads. A params section
  reaches a function as an argument annotated with its class (`p: DetectParams`), or as an
  attribute of one (`p.selftrain`), or kept on `self` (`self.p = p`); `to_dict(p)`, `asdict(p)`,
  `getattr(p, ...)` and `vars(p)` read every field.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import typing
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "spidergan"
WHOLE = "*"  # marker: every field of the section is read


def module_file(name: str) -> Path | None:
    """The source file of module `name` (dotted) inside spidergan/, or None."""
    parts = name.split(".")
    if parts[0] != "spidergan":
        return None
    base = ROOT.joinpath(*parts)
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def module_name(path: Path) -> str:
    rel = path.resolve().relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> list[str]:
    return sorted(module_name(f) for f in PKG.rglob("*.py"))


@functools.lru_cache(maxsize=None)
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _is_trivial(path: Path) -> bool:
    """A package __init__ holding only a docstring and constants: importing it runs nothing
    that could change a result, so it need not be a dvc dep."""
    for node in _tree(path).body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            continue
        return False
    return True


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:k]) for k in range(1, len(parts))]


def _imported_names(path: Path) -> list[str]:
    """Dotted spidergan module names imported anywhere in the file (any nesting)."""
    pkg = module_name(path)
    if path.name != "__init__.py":
        pkg = pkg.rpartition(".")[0]
    out = []
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x / from .y import x
                anchor = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for a in node.names:
                sub = f"{base}.{a.name}"
                out.append(sub if module_file(sub) else base)
    return [n for n in out if n.split(".")[0] == "spidergan" and module_file(n)]


def imports(name: str) -> set[str]:
    """spidergan modules that module `name` imports directly (packages included when their
    __init__ does something)."""
    path = module_file(name)
    out = set()
    for n in _imported_names(path):
        out.add(n)
        out.update(q for q in _parents(n) if not _is_trivial(module_file(q)))
    out.discard(name)
    return out


def closure(script: str | Path) -> set[Path]:
    """Every spidergan source file that running `script` can execute (paths relative to ROOT)."""
    script = ROOT / script
    todo = set()
    for n in _imported_names(script):
        todo.add(n)
        todo.update(q for q in _parents(n) if not _is_trivial(module_file(q)))
    seen: set[str] = set()
    while todo:
        n = todo.pop()
        if n in seen:
            continue
        seen.add(n)
        todo |= imports(n) - seen
    return {module_file(n).relative_to(ROOT) for n in seen}


def cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (or a module importing itself)."""
    graph = {m: imports(m) for m in all_modules()}
    index: dict = {}
    low: dict = {}
    stack: list = []
    on: set = set()
    out: list = []
    counter = [0]

    def visit(v):  # Tarjan; the graph is small, recursion depth is fine
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


# --------------------------------------------------------------------------- params reads
@functools.lru_cache(maxsize=None)
def section_classes() -> dict[str, type]:
    """{class name: class} of every params section dataclass."""
    from spidergan import params

    out = {}
    todo = [params.Params]
    while todo:
        cls = todo.pop()
        out[cls.__name__] = cls
        hints = typing.get_type_hints(cls)
        todo += [t for t in hints.values() if dataclasses.is_dataclass(t) and t.__name__ not in out]
    return out


def _annotation_class(node, classes) -> str | None:
    if node is None:
        return None
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        try:
            node = ast.parse(node.value, mode="eval").body
        except SyntaxError:
            return None
    for sub in ast.walk(node):
        name = sub.id if isinstance(sub, ast.Name) else sub.attr if isinstance(sub, ast.Attribute) else None
        if name in classes:
            return name
    return None


def _chain(node) -> list[str] | None:
    """`a.b.c` as ['a', 'b', 'c'] (None if the base is not a name)."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return [node.id] + parts[::-1]


_READ_ALL = {"to_dict", "asdict", "astuple", "getattr", "vars", "replace", "fields"}


def _field_path(cls: type, attrs: list[str], classes: dict) -> list[str]:
    """The dotted field path a chain of attributes on a `cls` value names; stops at a leaf."""
    out, cur = [], cls
    for a in attrs:
        if cur is None or a not in {f.name for f in dataclasses.fields(cur)}:
            break  # a method (validate) or not a field
        out.append(a)
        t = typing.get_type_hints(cur)[a]
        cur = t if dataclasses.is_dataclass(t) else None
    return out


def _section_at(cls: type, attrs: list[str]):
    """The section class reached by following `attrs` from `cls`, or None."""
    for a in attrs:
        if a not in {f.name for f in dataclasses.fields(cls)}:
            return None
        cls = typing.get_type_hints(cls)[a]
        if not dataclasses.is_dataclass(cls):
            return None
    return cls


@functools.lru_cache(maxsize=None)
def section_reads(path: Path) -> dict[str, set[str]]:
    """{section class name: dotted field paths read ('*' = all)} in one source file."""
    classes = section_classes()
    reads: dict[str, set[str]] = {}

    def add(cls_name, attrs):
        fp = _field_path(classes[cls_name], attrs, classes)
        if fp:  # else a method such as validate()
            reads.setdefault(cls_name, set()).add(".".join(fp))

    def scan(body_nodes, env: dict):
        """env: local name (or 'self.x') -> section class name."""
        for node in body_nodes:
            for sub in ast.walk(node):
                if isinstance(sub, ast.Attribute) and not isinstance(getattr(sub, "_parent", None), ast.Attribute):
                    ch = _chain(sub)
                    if not ch:
                        continue
                    if ch[0] in env:
                        add(env[ch[0]], ch[1:])
                    elif ch[0] == "self" and len(ch) > 1 and f"self.{ch[1]}" in env:
                        add(env[f"self.{ch[1]}"], ch[2:])
                if isinstance(sub, ast.Call):
                    fn = sub.func.attr if isinstance(sub.func, ast.Attribute) else getattr(sub.func, "id", None)
                    if fn in _READ_ALL:
                        for a in sub.args[:1]:
                            ch = _chain(a) if isinstance(a, (ast.Name, ast.Attribute)) else None
                            if ch and ch[0] in env:
                                fp = _field_path(classes[env[ch[0]]], ch[1:], classes)
                                reads.setdefault(env[ch[0]], set()).add(
                                    ".".join(fp + [WHOLE]) if fp else WHOLE)

    tree = _tree(path)
    for node in ast.walk(tree):  # parent links, so only whole attribute chains are counted
        for child in ast.iter_child_nodes(node):
            child._parent = node
    self_env: dict[ast.ClassDef, dict] = {}
    for cls in [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)]:
        env = {}
        for fn in [n for n in cls.body if isinstance(n, ast.FunctionDef)]:
            args = {a.arg: _annotation_class(a.annotation, classes)
                    for a in fn.args.args + fn.args.kwonlyargs}
            for st in ast.walk(fn):
                if (isinstance(st, ast.Assign) and isinstance(st.value, ast.Name)
                        and args.get(st.value.id)):
                    for t in st.targets:
                        ch = _chain(t) if isinstance(t, ast.Attribute) else None
                        if ch and ch[0] == "self" and len(ch) == 2:
                            env[f"self.{ch[1]}"] = args[st.value.id]
        self_env[cls] = env
    for fn in [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]:
        env = {}
        owner = getattr(fn, "_parent", None)
        if isinstance(owner, ast.ClassDef):
            env.update(self_env[owner])
        for a in fn.args.posonlyargs + fn.args.args + fn.args.kwonlyargs:
            c = _annotation_class(a.annotation, classes)
            if c:
                env[a.arg] = c
        if not env:
            continue
        for st in ast.walk(fn):  # local aliases of a section: sp = p.selftrain
            if isinstance(st, ast.Assign) and len(st.targets) == 1 and isinstance(st.targets[0], ast.Name):
                ch = _chain(st.value) if isinstance(st.value, (ast.Attribute, ast.Name)) else None
                if ch and ch[0] in env:
                    t = _section_at(classes[env[ch[0]]], ch[1:])
                    if t is not None:
                        env[st.targets[0].id] = t.__name__
        scan(fn.body, env)
    return reads
