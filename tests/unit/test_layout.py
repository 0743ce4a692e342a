"""The house rules of the core, read from the source: every import between tflite_lab's modules runs
one way (no cycles, lazy imports inside functions included), and the core never imports streamlit."""
from __future__ import annotations

import ast

from lab_helpers import ROOT

PKG = ROOT / "tflite_lab"


def _modules() -> dict[str, ast.Module]:
    out = {}
    for f in PKG.rglob("*.py"):
        parts = list(f.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = (f, ast.parse(f.read_text()))
    return out


def _edges(mods) -> dict[str, set[str]]:
    edges = {}
    for mod, (f, tree) in mods.items():
        package = mod.split(".") if f.name == "__init__.py" else mod.split(".")[:-1]
        deps = set()
        for n in ast.walk(tree):
            if isinstance(n, ast.ImportFrom):
                if n.level:
                    base = ".".join(package[:len(package) - (n.level - 1)] + ([n.module] if n.module else []))
                elif n.module and n.module.startswith("tflite_lab"):
                    base = n.module
                else:
                    continue
                if n.module is None:     # from . import x: the submodule x, else the package itself
                    deps |= {f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in n.names}
                else:
                    deps.add(base)
            elif isinstance(n, ast.Import):
                deps |= {a.name for a in n.names if a.name.startswith("tflite_lab")}
        edges[mod] = {d for d in deps if d in mods and d != mod}
    return edges


def _cycles(edges) -> list[list[str]]:
    """Tarjan's strongly connected components of more than one module."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
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

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_the_detector_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_imports_between_core_modules_run_one_way():
    assert _cycles(_edges(_modules())) == []


def test_the_core_never_imports_streamlit():
    for mod, (_, tree) in _modules().items():
        for n in ast.walk(tree):
            names = [a.name for a in n.names] if isinstance(n, ast.Import) else \
                [n.module or ""] if isinstance(n, ast.ImportFrom) else []
            assert not any(x.split(".")[0] == "streamlit" for x in names), mod
