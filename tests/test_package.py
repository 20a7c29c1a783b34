"""The package's shape, read from its sources with ``ast``: no import cycle, the tiers import
only downwards (engine < drivers < facade < tools, net), every module opens with a docstring,
no module grows past 800 lines and no line past 99 characters."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "numslab"
MAX_LINES = 800
MAX_WIDTH = 99


def _module_name(f: Path) -> str:
    parts = list(f.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(f): f for f in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or \
        (isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _imports(name: str, nested: bool) -> list[tuple[str, int]]:
    """The numslab modules ``name`` imports (with the line): those run when it is imported
    (its top level, and top-level ``if``/``try`` blocks, less ``if TYPE_CHECKING:``), and if
    ``nested`` also the imports inside its functions and classes."""
    f = MODULES[name]
    is_pkg = f.name == "__init__.py"
    here = name.split(".") if is_pkg else name.split(".")[:-1]
    found: list[tuple[str, int]] = []

    def target(node: ast.AST) -> list[str]:
        if isinstance(node, ast.Import):
            return [a.name for a in node.names]
        assert isinstance(node, ast.ImportFrom)
        if node.level:
            base = here[:len(here) - (node.level - 1)]
            mod = ".".join(base + (node.module.split(".") if node.module else []))
        else:
            mod = node.module or ""
        # "from pkg import mod" imports the module pkg.mod; "from mod import x" imports mod;
        # "from . import _gate" an extension module (no edge)
        pkg_dir = PACKAGE.parent.joinpath(*mod.split("."))
        return [f"{mod}.{a.name}" if f"{mod}.{a.name}" in MODULES else
                "" if any(pkg_dir.glob(f"{a.name}.*")) else mod for a in node.names]

    def visit(body: list[ast.stmt], top: bool) -> None:
        for node in body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for t in target(node):
                    if t.split(".")[0] == "numslab" and t in MODULES:
                        found.append((t, node.lineno))
            elif isinstance(node, ast.If):
                if not _is_type_checking(node):
                    visit(node.body + node.orelse, top)
            elif isinstance(node, ast.Try):
                visit(node.body + node.orelse + node.finalbody +
                      [s for h in node.handlers for s in h.body], top)
            elif isinstance(node, (ast.With,)):
                visit(node.body, top)
            elif nested and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef,
                                              ast.ClassDef)):
                visit(node.body, False)
            elif nested:
                for child in ast.iter_child_nodes(node):
                    if isinstance(child, ast.stmt):
                        visit([child], False)

    visit(ast.parse(f.read_text()).body, True)
    return found


def _graph(nested: bool) -> dict[str, set[str]]:
    return {m: {t for t, _ in _imports(m, nested) if t != m} for m in MODULES}


def _tier(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and (PACKAGE / parts[1]).is_dir() else "common"


#: what each tier must never import ("common" is errors, flags, geometry, jit and the root)
FORBIDDEN = {
    "engine": {"drivers", "facade", "tools", "net", "lab"},
    "drivers": {"facade", "tools", "net", "lab"},
    "facade": {"tools", "net", "lab"},
    "lab": {"tools", "net"},
    "net": {"tools", "lab"},        # apart: engine, facade and numslab.jit only
}
LEAVES = {"numslab.errors", "numslab.flags", "numslab.geometry"}


def test_the_import_graph_is_read():
    g = _graph(nested=False)
    assert "numslab.engine.native" in g["numslab.engine.layout"]
    assert "numslab.engine.ops" in g["numslab.drivers.gate"]          # from ..engine import ops
    assert "numslab.facade.allocator" not in g["numslab.drivers.gate"]  # TYPE_CHECKING only
    assert "numslab.geometry" in g["numslab.engine.layout"]
    assert len(MODULES) > 25


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of ``graph`` (as a path), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state:
                found = dfs(m)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state:
            found = dfs(n)
            if found:
                return found
    return None


def test_the_package_has_no_import_cycle():
    cycle = _cycle(_graph(nested=False))
    assert cycle is None, " -> ".join(cycle)


def test_the_cycle_finder_finds_cycles():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def _violations(nested: bool) -> list[str]:
    out = []
    for m in MODULES:
        tier = _tier(m)
        for t, line in _imports(m, nested):
            if _tier(t) in FORBIDDEN.get(tier, ()):
                out.append(f"{m} (line {line}) imports {t}")
            if m in LEAVES and t not in LEAVES:
                out.append(f"{m} (line {line}) imports {t}")
    return out


def test_each_tier_imports_only_the_tiers_below_it():
    bad = _violations(nested=False)
    assert not bad, "\n".join(bad)


def test_no_tier_imports_upwards_even_inside_a_function():
    bad = _violations(nested=True)
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_module_opens_with_a_docstring(name):
    tree = ast.parse(MODULES[name].read_text())
    assert tree.body, f"{name} is empty"
    first = tree.body[0]
    assert isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
        and isinstance(first.value.value, str), f"{name} does not open with a docstring"
    assert first.value.value.strip(), f"{name}'s docstring is empty"


def _line_counts() -> dict[str, int]:
    return {name: len(f.read_text().splitlines()) for name, f in MODULES.items()}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_is_over_800_lines(name):
    lines = _line_counts()[name]
    assert lines <= MAX_LINES, f"{name} has {lines} lines"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_line_is_over_99_characters(name):
    # eleven lines of six modules had grown past the project's 99 (up to 108)
    long = [i for i, line in enumerate(MODULES[name].read_text().splitlines(), 1)
            if len(line) > MAX_WIDTH]
    assert not long, f"{name}: lines {long} are over {MAX_WIDTH} characters"


def _multi_line_summaries(source: str) -> list[str]:
    """The module, classes and functions of ``source`` whose docstring's summary (its first
    paragraph) runs over more than one line."""
    tree = ast.parse(source)
    found = []
    for node in [tree, *ast.walk(tree)]:
        if node is not tree and not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                       ast.ClassDef)):
            continue
        doc = ast.get_docstring(node)
        if doc and "\n" in doc.strip().split("\n\n")[0]:
            found.append(getattr(node, "name", "<module>"))
    return found


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_docstring_opens_with_a_one_line_summary(name):
    """numpydoc's rule: a one-line summary, then a blank line, then the rest."""
    bad = _multi_line_summaries(MODULES[name].read_text())
    assert not bad, f"{name}: the summary of {', '.join(bad)} runs over one line"


BENCHMARKS = sorted((PACKAGE.parent / "asv_bench" / "benchmarks").glob("*.py")) + \
    sorted((PACKAGE.parent / "examples").glob("*.py"))


@pytest.mark.parametrize("bench", BENCHMARKS, ids=[f.name for f in BENCHMARKS])
def test_every_benchmark_docstring_opens_with_a_one_line_summary(bench):
    """The asv suite and the examples keep the package's rule: a one-line summary, then a
    blank line."""
    bad = _multi_line_summaries(bench.read_text())
    assert not bad, f"{bench.name}: the summary of {', '.join(bad)} runs over one line"


def test_the_summary_check_finds_a_long_summary():
    src = ('"""Role.\n\nMore."""\ndef f():\n    """One\n    two."""\n\n\n'
           'class C:\n    """One.\n\n    Two\n    three."""\n')
    assert _multi_line_summaries(src) == ["f"]
