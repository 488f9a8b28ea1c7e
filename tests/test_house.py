"""The core and the journal name no host, read from the source.

Every host detail (its name, its production URL, the environment variables its users keep the key
and base URL in) lives in its provider module (``qimage_nb/providers/<host>.py``); ``core/`` and
``journal/`` ask the provider (``provider.key_env``, ``provider.default_base_url``, ...). So a new
host is one provider module, and nothing in the core learns its name.

The scan reads every line, comments and docstrings included: a docstring that names one host's
variable is already the core knowing that host.
"""

from __future__ import annotations

import ast
import re
import shutil
from pathlib import Path

import httpx
import pytest
from test_import_graph import import_graph

import qimage_nb
from qimage_nb import _contract
from qimage_nb.providers import ALIASES, all_providers

ROOT = Path(qimage_nb.__file__).parent
HOST_NEUTRAL = ("core", "journal")

# Hosts on their way in (issue 22) are named before they arrive, with the variables their own SDKs
# read, so that the core cannot learn them either.
COMING = ("fal", "replicate", "FAL_KEY", "REPLICATE_API_TOKEN")
# An alias that is an ordinary word of the domain names no host: "seed" is also a request's seed.
NOT_A_HOST = {"seed"}


def host_words() -> list[str]:
    """Every string that names a host: provider names and aliases, their key and base-URL
    variables, their production hosts, and the hosts that are coming."""
    words = set(COMING)
    words.update(alias for alias in ALIASES if alias not in NOT_A_HOST)
    for provider in all_providers():
        words.update((provider.name, provider.key_env, provider.base_url_env))
        words.add(httpx.URL(provider.default_base_url).host)
    return sorted(word for word in words if word)


def _pattern(words: list[str]) -> re.Pattern[str]:
    # A word is a host's only where no letter or digit continues it: "fal" in FAL_KEY or fal.ai, not
    # in "false"; "replicate" alone, not "replicated". Any https:// URL is a production host.
    alternatives = "|".join(rf"(?<![a-z0-9]){re.escape(word)}(?![a-z0-9])" for word in words)
    return re.compile(rf"{alternatives}|https://[^\s\"'`)]+", re.IGNORECASE)


def host_mentions(folder: Path, words: list[str] | None = None) -> list[str]:
    """``file:line: what`` for every mention of a host in the Python source under ``folder``."""
    pattern = _pattern(words if words is not None else host_words())
    found = []
    for path in sorted(folder.rglob("*.py")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for match in pattern.finditer(line):
                found.append(f"{path.relative_to(folder.parent)}:{number}: {match.group(0)}")
    return found


@pytest.mark.parametrize("folder", HOST_NEUTRAL)
def test_the_core_and_the_journal_name_no_host(folder):
    found = host_mentions(ROOT / folder)
    assert found == [], (
        f"qimage_nb/{folder} names a host; move the detail into its provider module "
        "(qimage_nb/providers/<host>.py) and ask the provider for it:\n" + "\n".join(found)
    )


def test_the_contract_holds_no_production_url():
    # The contract is what every host shares; a production URL is one host's, in its provider module.
    # (It may name hosts in its prose: which host spells a size how is shared knowledge.)
    found = [line for line in host_mentions(ROOT) if line.startswith("qimage_nb/_contract.py:") and "://" in line]
    assert found == [] and not [
        name for name, value in vars(_contract).items() if isinstance(value, str) and "://" in value
    ]


def _contract_imports(folder: Path) -> dict[str, list[str]]:
    """The names each module under ``folder`` takes from ``qimage_nb._contract``."""
    taken: dict[str, list[str]] = {}
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").endswith("_contract"):
                taken.setdefault(path.name, []).extend(alias.name for alias in node.names)
    return taken


@pytest.mark.parametrize("folder", HOST_NEUTRAL)
def test_the_core_and_the_journal_take_no_url_from_the_contract(folder):
    # A host's URL reached by name (``from .._contract import PRODUCTION_BASE_URL``) is still the core
    # knowing that host, though the URL is written elsewhere.
    taken = _contract_imports(ROOT / folder)
    assert taken, "the scan found no import from the contract at all: it is reading the wrong thing"
    urls = {
        f"{module}: {name}"
        for module, names in taken.items()
        for name in names
        if "URL" in name.upper() or "://" in str(getattr(_contract, name, ""))
    }
    assert urls == set()


def test_the_scan_finds_each_host_in_its_own_provider_module():
    # The scan is not blind: each provider module names its host, its variables and its URL.
    for provider in all_providers():
        found = host_mentions(ROOT / "providers")
        mine = [line for line in found if line.startswith(f"providers/{provider.name}.py:")]
        said = {line.rsplit(": ", 1)[1].lower() for line in mine}
        assert provider.name in said
        assert provider.key_env.lower() in said
        assert any(what.startswith("https://") for what in said)


def test_a_host_planted_in_a_copy_of_the_core_is_found(tmp_path):
    copy = tmp_path / "qimage_nb"
    for folder in HOST_NEUTRAL:
        shutil.copytree(ROOT / folder, copy / folder, ignore=shutil.ignore_patterns("__pycache__"))
    assert host_mentions(copy / "core") == [] and host_mentions(copy / "journal") == []
    planted = {
        "core/_client.py": 'KEY = os.environ.get("DASHSCOPE_API_KEY")  # planted\n',
        "core/_config.py": 'EXAMPLE = "https://api.example.com"  # planted\n',
        "core/_http.py": "# the Apimart header, planted\n",
        "journal/_store.py": 'HOSTS = ("fal", "Replicate")  # planted\n',
    }
    for name, line in planted.items():
        with open(copy / name, "a", encoding="utf-8") as sink:
            sink.write(line)
    found = host_mentions(copy / "core") + host_mentions(copy / "journal")
    said = {line.split(": ", 1)[0].rsplit(":", 1)[0]: [] for line in found}
    for line in found:
        said[line.split(": ", 1)[0].rsplit(":", 1)[0]].append(line.rsplit(": ", 1)[1])
    assert said == {
        "core/_client.py": ["DASHSCOPE_API_KEY"],
        "core/_config.py": ['https://api.example.com'],
        "core/_http.py": ["Apimart"],
        "journal/_store.py": ["fal", "Replicate"],
    }


def test_words_that_merely_contain_a_host_name_are_not_hosts(tmp_path):
    folder = tmp_path / "core"
    folder.mkdir()
    (folder / "_ok.py").write_text(
        'FALLBACK = False  # a replicated row; http(s) schemes; "https" alone; the seed of a request\n'
    )
    assert host_mentions(folder) == []


# --- the notebook faces (issue 20 points 2-3) ---------------------------------------------------
# - The faces (every module that imports IPython or ipywidgets) live in ``qimage_nb/notebook/``:
#   the core, the journal, the providers, the emulators and the static renderer (``view/``) work in
#   a plain Python process, a script or a batch job, with neither installed or loaded.
# - Nothing outside ``notebook/`` imports it (the package root's lazy public names and
#   ``load_ipython_extension`` aside): the client never reaches up into a face.
# - The faces' rooms stay small: no module of ``notebook/`` or ``view/`` over about 500 lines, no
#   class over about 400.

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


def test_the_layers_import_only_downwards():
    """The README's picture of the house, checked: which layer may import which."""
    allowed = {
        "notebook": {"core", "view", "journal", "providers", "emulator"},
        "core": {"view", "journal", "providers"},
        "view": {"journal"},
        "journal": set(),
        "providers": set(),
        "emulator": set(),
    }
    layers = set(allowed)

    def layer(module: str) -> str | None:
        parts = module.split(".")
        return parts[1] if len(parts) > 1 and parts[1] in layers else None

    graph = import_graph()
    seen = {(layer(a), layer(b)) for a, targets in graph.items() for b in targets}
    crossings = {(a, b) for a, b in seen if a and b and a != b}
    assert len({a for a, _ in crossings}) >= 3, "the walker saw the layers"
    wrong = sorted((a, b) for a, b in crossings if b not in allowed[a])
    assert wrong == [], f"imports against the layers: {wrong}"
