"""The import layout of DESIGN.md ("Arrows"), read from the source with ``ast``.

Every ``import`` counts: module level, inside functions, under ``if TYPE_CHECKING:``. An import names
the file it loads: ``from pkg import mod`` is ``pkg/mod.py`` when that file exists, else ``pkg/__init__.py``;
``import a.b`` is ``a/b.py`` (or ``a/b/__init__.py``). Relative imports resolve against the importing
file's package. The checks: no circle between files, and no arrow the layout forbids (core → anything
above it; server → SDK or training; training → server or SDK; SDK → training; SDK → server except
``stream_server.protocol``).
"""

from __future__ import annotations

import ast
from collections import deque
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("mllmdr_core", "stream_server", "client_sdk", "training")
SDK_MAY_USE_FROM_SERVER = frozenset({"stream_server.protocol"})
_NEVER: dict[str, frozenset[str]] = {
    "mllmdr_core": frozenset({"stream_server", "client_sdk", "training"}),
    "stream_server": frozenset({"client_sdk", "training"}),
    "training": frozenset({"stream_server", "client_sdk"}),
    "client_sdk": frozenset({"training"}),
}

Graph = dict[str, set[str]]


def module_files(root: Path, packages: Iterable[str]) -> dict[str, Path]:
    """Dotted module name → source file for every ``.py`` of the packages (``pkg/__init__.py`` is ``pkg``)."""
    out: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _known(name: str, modules: Mapping[str, Path]) -> str | None:
    """``name`` or its longest prefix that is one of ``modules`` (``a.b.Thing`` → ``a.b``)."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        if candidate in modules:
            return candidate
    return None


def _targets(
    node: ast.Import | ast.ImportFrom, module: str, is_package: bool, modules: Mapping[str, Path]
) -> set[str]:
    if isinstance(node, ast.Import):
        return {t for alias in node.names if (t := _known(alias.name, modules))}
    if node.level:
        package = module.split(".") if is_package else module.split(".")[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join([*package, node.module] if node.module else package)
    else:
        base = node.module or ""
    out: set[str] = set()
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        target = sub if sub in modules else _known(base, modules)
        if target:
            out.add(target)
    return out


def import_graph(root: Path, packages: Iterable[str] = PACKAGES) -> Graph:
    """Module → the modules of ``packages`` it imports (any nesting level); self-imports left out."""
    modules = module_files(root, packages)
    graph: Graph = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        edges: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                edges |= _targets(node, module, is_package, modules)
        edges.discard(module)
        graph[module] = edges
    return graph


def _strongly_connected(graph: Graph) -> list[list[str]]:
    """Tarjan's components of more than one module, each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def _shortest_cycle(graph: Graph, start: str, within: set[str]) -> list[str]:
    """The shortest path ``start → … → start`` inside one component (breadth first)."""
    parent: dict[str, str] = {}
    queue = deque([start])
    while queue:
        v = queue.popleft()
        for w in sorted(graph[v] & within):
            if w == start:
                path = [v]  # v, parent(v), …, start
                while path[-1] != start:
                    path.append(parent[path[-1]])
                return [*reversed(path), start]
            if w not in parent:
                parent[w] = v
                queue.append(w)
    raise AssertionError(f"{start} is in a component but on no cycle")


def cycles(graph: Graph) -> list[list[str]]:
    """One shortest cycle per circle of files (a strongly connected component), as a path."""
    return [_shortest_cycle(graph, comp[0], set(comp)) for comp in _strongly_connected(graph)]


def forbidden_arrows(graph: Graph) -> list[tuple[str, str]]:
    """(importer, imported) pairs the layout forbids."""
    out = []
    for src, targets in sorted(graph.items()):
        top = src.split(".")[0]
        for dst in sorted(targets):
            dst_top = dst.split(".")[0]
            sdk_to_server = top == "client_sdk" and dst_top == "stream_server"
            if dst_top in _NEVER.get(top, ()) or (sdk_to_server and dst not in SDK_MAY_USE_FROM_SERVER):
                out.append((src, dst))
    return out


def test_no_import_circles_between_files() -> None:
    found = cycles(import_graph(ROOT))
    assert not found, "import circles:\n" + "\n".join(" → ".join(c) for c in found)


def test_no_forbidden_arrows() -> None:
    found = forbidden_arrows(import_graph(ROOT))
    assert not found, "arrows the layout forbids:\n" + "\n".join(f"{a} → {b}" for a, b in found)


def test_graph_covers_the_four_packages() -> None:
    graph = import_graph(ROOT)
    assert {m.split(".")[0] for m in graph} == set(PACKAGES)
    assert "mllmdr_core.errors" in graph["client_sdk.session"]
    assert "stream_server.protocol" in graph["client_sdk.session"]


# --- the checker itself, on a tiny tree ---------------------------------------------------------------


def _tree(root: Path, files: Mapping[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for package in PACKAGES:
        (root / package).mkdir(exist_ok=True)
        (root / package / "__init__.py").touch()
    return root


def test_checker_resolves_every_import_form(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "training/data/__init__.py": "from training.data.records import Record\n",
            "training/data/records.py": "from . import wav\nfrom .. import metrics as m\n",
            "training/data/wav.py": "import training.data\n",
            "training/metrics.py": "def f():\n    from mllmdr_core.errors import E\n",
            "mllmdr_core/errors.py": "import numpy\nimport os\n",
            "mllmdr_core/sub/__init__.py": "from .inner import x\n",
            "mllmdr_core/sub/inner.py": "from ..errors import E\nfrom mllmdr_core import errors\n",
        },
    )
    graph = import_graph(root)
    assert graph["training.data"] == {"training.data.records"}
    assert graph["training.data.records"] == {"training.data.wav", "training.metrics"}
    assert graph["training.data.wav"] == {"training.data"}  # a package import is its __init__.py
    assert graph["training.metrics"] == {"mllmdr_core.errors"}  # function-level import
    assert graph["mllmdr_core.errors"] == set()  # third-party imports are not ours
    assert graph["mllmdr_core.sub"] == {"mllmdr_core.sub.inner"}
    assert graph["mllmdr_core.sub.inner"] == {"mllmdr_core.errors"}
    assert cycles(graph) == [["training.data", "training.data.records", "training.data.wav", "training.data"]]
    assert forbidden_arrows(graph) == []


def test_checker_finds_a_circle_through_type_checking(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "client_sdk/replay.py": "def w():\n    from client_sdk.report import write\n",
            "client_sdk/report.py": (
                "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from client_sdk.replay import R\n"
            ),
            "client_sdk/a.py": "from client_sdk import b\n",
            "client_sdk/b.py": "from client_sdk import c\n",
            "client_sdk/c.py": "from client_sdk import a, replay\n",
        },
    )
    assert cycles(import_graph(root)) == [
        ["client_sdk.a", "client_sdk.b", "client_sdk.c", "client_sdk.a"],
        ["client_sdk.replay", "client_sdk.report", "client_sdk.replay"],
    ]


@pytest.mark.parametrize(
    ("src", "text", "arrow"),
    [
        ("mllmdr_core/x.py", "def f():\n    import training.eval\n", ("mllmdr_core.x", "training.eval")),
        (
            "mllmdr_core/x.py",
            "from stream_server import protocol\n",
            ("mllmdr_core.x", "stream_server.protocol"),
        ),
        ("stream_server/x.py", "from client_sdk.media import f\n", ("stream_server.x", "client_sdk.media")),
        ("training/x.py", "from stream_server.protocol import A\n", ("training.x", "stream_server.protocol")),
        ("training/x.py", "import client_sdk\n", ("training.x", "client_sdk")),
        ("client_sdk/x.py", "from training import eval\n", ("client_sdk.x", "training.eval")),
        ("client_sdk/x.py", "from stream_server.ice import to_rtc\n", ("client_sdk.x", "stream_server.ice")),
        ("client_sdk/x.py", "import stream_server\n", ("client_sdk.x", "stream_server")),
    ],
)
def test_checker_finds_a_forbidden_arrow(tmp_path: Path, src: str, text: str, arrow: tuple[str, str]) -> None:
    files = {
        src: text,
        "training/eval.py": "",
        "stream_server/protocol.py": "",
        "stream_server/ice.py": "",
        "client_sdk/media.py": "",
    }
    assert forbidden_arrows(import_graph(_tree(tmp_path, files))) == [arrow]


def test_checker_passes_a_clean_tree(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "mllmdr_core/media.py": "import av\nfrom mllmdr_core.errors import E\n",
            "mllmdr_core/errors.py": "class E(Exception): ...\n",
            "stream_server/protocol.py": "from mllmdr_core import errors\n",
            "stream_server/app.py": "from stream_server import protocol\nfrom mllmdr_core.media import f\n",
            "client_sdk/session.py": (
                "from stream_server.protocol import A\nfrom stream_server import protocol\n"
            ),
            "client_sdk/replay.py": "from mllmdr_core.media import f\nfrom .session import S\n",
            "training/features.py": "from mllmdr_core import media\n",
        },
    )
    graph = import_graph(root)
    assert graph["client_sdk.session"] == {"stream_server.protocol"}
    assert graph["client_sdk.replay"] == {"mllmdr_core.media", "client_sdk.session"}
    assert cycles(graph) == [] and forbidden_arrows(graph) == []
