"""broker-client imports nothing of the server: a walk over the imports of broker.client.cli
(every ``import`` in every module it reaches, lazy ones inside functions included) must stay
inside the client-only distribution's module list (packaging/client/MODULES) and reach no
server dependency. An import guarded by ``except ImportError`` is optional (card-sim's demo
issuer) and not followed."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
#: What a client-only install has besides the standard library (packaging/client/setup.py).
CLIENT_REQUIRES = {"click", "cryptography", "joserfc", "smartcard"}
SERVER_STACK = {"twisted", "sqlalchemy", "klein", "treq", "alembic", "psycopg", "pydantic",
                "jinja2", "prometheus_client", "OpenSSL", "pyhanko_certvalidator", "asn1crypto",
                "ldap"}


def module_file(name: str) -> Path | None:
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def optional(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    """Inside a ``try`` whose handlers catch ImportError."""
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.Try) and any(
                isinstance(h.type, ast.Name) and h.type.id in ("ImportError",
                                                               "ModuleNotFoundError")
                for h in node.handlers):
            return True
    return False


def walk(start: str) -> tuple[set[str], dict[str, set[str]]]:
    """The broker modules reached from ``start`` and the third-party top-level imports (each
    with the modules importing it)."""
    reached: set[str] = set()
    third: dict[str, set[str]] = {}
    todo = [start]
    while todo:
        name = todo.pop()
        path = module_file(name)
        if name in reached or path is None:
            continue
        reached.add(name)
        # importing a.b.c runs a/__init__ and a/b/__init__ first
        todo += [".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)]
        tree = ast.parse(path.read_text(), str(path))
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            if optional(node, parents):
                continue
            for imported in names:
                top = imported.split(".")[0]
                if top == "broker":
                    if module_file(imported):
                        todo.append(imported)
                elif top not in sys.stdlib_module_names and top != "__future__":
                    third.setdefault(top, set()).add(name)
    return reached, third


def distributed(module: str) -> bool:
    entries = [line.strip() for line in (ROOT / "packaging/client/MODULES").read_text()
               .splitlines() if line.strip() and not line.startswith("#")]
    return any(module == e or (e.endswith(".*") and (module.startswith(e[:-1])
                                                     or module == e[:-2])) for e in entries)


def test_broker_client_reaches_only_client_modules() -> None:
    reached, third = walk("broker.client.cli")
    assert "broker.client.flow" in reached and "broker.cardsim.vpcd" in reached  # it walks
    outside = sorted(m for m in reached if not distributed(m))
    assert not outside, f"broker-client imports modules outside the client distribution: " \
                        f"{outside}"
    server = {k: sorted(v) for k, v in third.items() if k in SERVER_STACK}
    assert not server, f"broker-client imports the server stack: {server}"
    assert set(third) <= CLIENT_REQUIRES, sorted(set(third) - CLIENT_REQUIRES)


def test_the_walk_sees_a_server_import() -> None:
    """The check can fail: the server's entry point reaches Twisted and SQLAlchemy."""
    reached, third = walk("broker.cli")
    assert {"twisted", "sqlalchemy"} <= set(third)
    assert any(not distributed(m) for m in reached)
