"""No import cycles: every ``import`` in ``qimage_nb`` that can run, read from the source.

The graph counts imports at module level and inside functions (a lazy import is still a dependency:
it runs the first time the function does), and ``importlib.import_module`` calls (a call whose target
is computed at run time depends on every module of its package). Imports under ``if TYPE_CHECKING:``
never run and are left out.
"""

from __future__ import annotations

import ast
from pathlib import Path

import qimage_nb

ROOT = Path(qimage_nb.__file__).parent



def _modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports_of(name: str, path: Path, modules: set[str]) -> set[str]:
    """The modules of ``qimage_nb`` that module ``name`` (at ``path``) may import when it runs."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    edges: set[str] = set()

    def absolute(level: int, module: str | None) -> str:
        if not level:
            return module or ""
        parts = package.split(".")
        return ".".join(parts[: len(parts) - (level - 1)] + ([module] if module else []))

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child.test):
                for other in child.orelse:
                    visit_node(other)
            else:
                visit_node(child)

    def visit_node(node: ast.AST) -> None:
        if isinstance(node, ast.ImportFrom):
            target = absolute(node.level, node.module)
            submodules = {f"{target}.{alias.name}" for alias in node.names} & modules
            edges.update(submodules)
            if len(submodules) < len(node.names):
                edges.add(target)  # names defined in the module (or package) itself
        elif isinstance(node, ast.Import):
            edges.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "import_module":
            first = node.args[0] if node.args else None
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                dots = len(first.value) - len(first.value.lstrip("."))
                edges.add(absolute(dots, first.value.lstrip(".") or None))
            else:
                # never a package's __main__: ``python -m`` runs it, no import_module call does
                edges.update(m for m in modules if m.startswith(package + ".") and not m.endswith(".__main__"))
        visit(node)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return (edges & modules) - {name}


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports_of(name, path, set(modules)) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def strongconnect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(graph[node]):
            if other not in index:
                strongconnect(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(component)

    for node in sorted(graph):
        if node not in index:
            strongconnect(node)
    return found


def test_the_walker_sees_lazy_imports_and_skips_type_checking_ones():
    graph = import_graph()
    assert "qimage_nb.core._polling" in graph["qimage_nb.core._client"]  # at module level
    assert "qimage_nb.view._gallery" in graph["qimage_nb.core._results"]  # inside Generation._repr_mimebundle_
    assert "qimage_nb.core._results" not in graph["qimage_nb.view._gallery"]  # only under TYPE_CHECKING
    assert "qimage_nb.notebook._magics" in graph["qimage_nb"]  # load_ipython_extension
    assert "qimage_nb.notebook._panel" in graph["qimage_nb"]  # import_module over the package's modules
    # and it finds a cycle when there is one
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]


def test_qimage_nb_has_no_import_cycles():
    found = [sorted(component) for component in cycles(import_graph())]
    assert found == []


def test_thumbnails_default_to_the_galleries_size():
    from qimage_nb.journal import _thumbnails
    from qimage_nb.view import _gallery

    assert _thumbnails.THUMB_PX == _gallery.DEFAULT_THUMB_PX
