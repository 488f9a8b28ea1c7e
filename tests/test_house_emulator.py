"""The emulators' rules of the house, read from the source.

- An emulator imports nothing of the client but the contract's constants: it must stay an independent
  witness of each host's wire, so a bug in the client cannot be copied into the server it is tested on.
- One emulator package per provider module, each on the shared core (a ``HostEmulator`` subclass),
  and no host's emulator imports another host's.
"""

from __future__ import annotations

import ast
from pathlib import Path

from test_import_graph import import_graph

import qimage_nb

ROOT = Path(qimage_nb.__file__).parent
EMULATOR = "qimage_nb.emulator"


def _host_packages() -> set[str]:
    return {p.name for p in (ROOT / "emulator").iterdir() if p.is_dir() and (p / "__init__.py").exists()}


def _provider_modules() -> set[str]:
    return {p.stem for p in (ROOT / "providers").glob("*.py") if not p.stem.startswith("_")}


def _contract_names_used(path: Path) -> set[str]:
    """Names an emulator module takes from ``qimage_nb._contract``."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").endswith("_contract"):
            names.update(alias.name for alias in node.names)
    return names


def test_emulators_import_nothing_of_the_client_but_the_contract():
    graph = import_graph()
    emulator_modules = [m for m in graph if m == EMULATOR or m.startswith(EMULATOR + ".")]
    assert len(emulator_modules) > 10, "the walker found the emulator's modules"
    for module in emulator_modules:
        outside = {m for m in graph[module] if not (m == EMULATOR or m.startswith(EMULATOR + "."))}
        assert outside <= {"qimage_nb._contract"}, f"{module} imports {sorted(outside)}"


def test_what_an_emulator_takes_from_the_contract_is_constants():
    import qimage_nb._contract as contract

    for path in (ROOT / "emulator").rglob("*.py"):
        for name in _contract_names_used(path):
            value = getattr(contract, name)
            assert not callable(value) or (isinstance(value, type) and issubclass(value, (str, int))), (
                f"{path.relative_to(ROOT)} takes {name} from the contract, which is not a constant"
            )


def test_one_emulator_package_per_provider_module_on_the_shared_core():
    from qimage_nb.emulator._host import HostEmulator

    assert _host_packages() == _provider_modules(), (
        "each provider module in qimage_nb/providers/ has an emulator package of the same name "
        "under qimage_nb/emulator/, and no other package lives there"
    )
    for host in _host_packages():
        package = __import__(f"{EMULATOR}.{host}", fromlist=["*"])
        emulators = [getattr(package, name) for name in getattr(package, "__all__", [])]
        assert any(isinstance(e, type) and issubclass(e, HostEmulator) for e in emulators), host


def test_no_hosts_emulator_imports_another_hosts():
    graph = import_graph()
    hosts = _host_packages()
    for host in hosts:
        prefix = f"{EMULATOR}.{host}"
        for module in (m for m in graph if m == prefix or m.startswith(prefix + ".")):
            for other in hosts - {host}:
                theirs = f"{EMULATOR}.{other}"
                assert not any(m == theirs or m.startswith(theirs + ".") for m in graph[module]), (
                    f"{module} imports {other}'s emulator"
                )


def test_the_emulator_registry_lists_every_provider_and_names_the_variables_it_reads():
    from qimage_nb.emulator import HOSTS, emulator_class
    from qimage_nb.providers import get_provider

    assert set(HOSTS) == _provider_modules()
    for name in HOSTS:
        host, provider = emulator_class(name), get_provider(name)
        # `python -m qimage_nb.emulator` prints a use: line; it must name what the provider reads
        assert (host.key_variable, host.base_url_variable) == (provider.key_env, provider.base_url_env), name

