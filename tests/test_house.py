"""The rules of the house for the notebook faces, read from the source (issue 20).

- The faces (every module that imports IPython or ipywidgets) live in ``qimage_nb/notebook/``:
  the core, the journal, the providers, the emulators and the static renderer (``view/``) work in
  a plain Python process, a script or a batch job, with neither installed or loaded.
- Nothing outside ``notebook/`` imports it (the package root's lazy public names and
  ``load_ipython_extension`` aside): the client never reaches up into a face.
- The faces' rooms stay small: no module of ``notebook/`` or ``view/`` over about 500 lines, no
  class over about 400.
"""

from __future__ import annotations

import ast
from pathlib import Path

import qimage_nb

ROOT = Path(qimage_nb.__file__).parent
FACE_LIBRARIES = ("IPython", "ipywidgets")
FACES = "qimage_nb.notebook"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imported(name: str, source: str, *, is_package: bool = False) -> set[str]:
    """Every module an ``import`` in ``source`` names, absolute, wherever it stands (module level,
    inside a function, under ``if TYPE_CHECKING:``): a face library named anywhere is a face."""
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - (node.level - 1)])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


def _sources() -> dict[str, tuple[Path, str]]:
    return {_module_name(p): (p, p.read_text(encoding="utf-8")) for p in sorted(ROOT.rglob("*.py"))}


def _uses_face_library(imports: set[str]) -> bool:
    return any(m == lib or m.startswith(lib + ".") for m in imports for lib in FACE_LIBRARIES)


def _imports_faces(imports: set[str]) -> bool:
    return any(m == FACES or m.startswith(FACES + ".") for m in imports)


def test_the_checks_see_relative_lazy_and_type_checking_imports():
    # The helpers the rules below rely on, on sources that break them (so the rules can fail).
    lazy = "def f():\n    from IPython.display import display\n"
    assert _uses_face_library(_imported("qimage_nb.core._x", lazy))
    typed = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import ipywidgets as W\n"
    assert _uses_face_library(_imported("qimage_nb.view._x", typed))
    relative = "def f():\n    from ..notebook._display import LiveGallery\n"
    assert _imports_faces(_imported("qimage_nb.core._results", relative))
    from_package = "from ..notebook import _session\n"
    assert _imports_faces(_imported("qimage_nb.journal._store", from_package))
    assert not _imports_faces(_imported("qimage_nb.core._results", "from ..view._gallery import gallery_bundle\n"))
    assert not _uses_face_library(_imported("qimage_nb.core._x", "import ipywidgetsx\nimport IPythonic\n"))


def test_every_module_importing_ipython_or_ipywidgets_is_under_notebook():
    outside = [
        name
        for name, (path, source) in _sources().items()
        if not (name == FACES or name.startswith(FACES + "."))
        and name != "qimage_nb"  # load_ipython_extension is handed the shell; it imports none
        and _uses_face_library(_imported(name, source, is_package=path.name == "__init__.py"))
    ]
    assert outside == [], f"modules outside qimage_nb/notebook/ that import IPython or ipywidgets: {outside}"
    # and the faces are really there (the rule is not vacuous)
    faces = [
        name for name, (path, source) in _sources().items()
        if name.startswith(FACES + ".") and _uses_face_library(_imported(name, source))
    ]
    assert {"qimage_nb.notebook._magics", "qimage_nb.notebook._panel_view"} <= set(faces)


def test_nothing_outside_notebook_imports_a_face():
    offenders = [
        name
        for name, (path, source) in _sources().items()
        if name != "qimage_nb"  # the root: lazy public names (Panel, current_client) and load_ipython_extension
        and not (name == FACES or name.startswith(FACES + "."))
        and _imports_faces(_imported(name, source, is_package=path.name == "__init__.py"))
    ]
    assert offenders == [], f"modules outside qimage_nb/notebook/ that import it: {offenders}"


def test_the_root_imports_faces_only_lazily():
    """The package root names faces only inside functions (``__getattr__``'s table, the TYPE_CHECKING
    block, ``load_ipython_extension``): ``import qimage_nb`` loads no face."""
    tree = ast.parse((ROOT / "__init__.py").read_text(encoding="utf-8"))
    at_import = [
        node for node in tree.body
        if isinstance(node, (ast.Import, ast.ImportFrom))
        and _imports_faces(_imported("qimage_nb", ast.unparse(node), is_package=True))
    ]
    assert at_import == []


def test_faces_and_view_modules_and_classes_stay_small():
    big = []
    for name, (_path, source) in _sources().items():
        if not name.startswith((FACES + ".", "qimage_nb.view")):
            continue
        lines = len(source.splitlines())
        if lines > 500:
            big.append(f"{name}: {lines} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > 400:
                big.append(f"{name}.{node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert big == []
