"""Layering, read from the source itself (import-linter checks it too, from the other side).

agent and verifier never import each other; attest imports neither. Only the modules of the
attest.wire package (attest/wire/), the generated attest/v1 package and gRPC modules (modules
that import grpc) touch `*_pb2`. Every module's AST is walked, so imports inside functions,
relative imports and `importlib.import_module("...")` with a literal name are all seen.

Inside the verifier, the layers contract of pyproject.toml is read and checked again here: a
module imports only layers below its own, and never an independent sibling (so the store and the
pure pipeline, rules and records cannot grow back into a cycle).
"""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("attest", "agent", "verifier")
FORBIDDEN = {"attest": {"agent", "verifier"}, "agent": {"verifier"}, "verifier": {"agent"}}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def imports_in(source: str, module: str, is_package: bool) -> set[str]:
    """Every module name `source` imports, absolute, including `from X import name` as X.name."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, is_package, node)
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (getattr(node.func, "attr", None) or getattr(node.func, "id", None))
            in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.add(node.args[0].value)
    return found


def imports_of(path: Path) -> set[str]:
    source = path.read_text(encoding="utf-8")
    return imports_in(source, _module_name(path), path.name == "__init__.py")


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


ALL = [path for package in PACKAGES for path in _modules(package)]


@pytest.mark.parametrize("path", ALL, ids=[str(p.relative_to(ROOT)) for p in ALL])
def test_package_boundaries(path: Path) -> None:
    package = path.relative_to(ROOT).parts[0]
    bad = {name for name in imports_of(path) if name.split(".")[0] in FORBIDDEN[package]}
    assert not bad, f"{package} must not import {sorted(bad)}"


@pytest.mark.parametrize("path", ALL, ids=[str(p.relative_to(ROOT)) for p in ALL])
def test_only_the_wire_package_and_grpc_modules_touch_pb2(path: Path) -> None:
    relative = path.relative_to(ROOT).as_posix()
    if relative.startswith(("attest/wire/", "attest/v1/")):
        return
    names = imports_of(path)
    if any(name.rsplit(".", 1)[-1].endswith("_pb2") for name in names):
        assert any(name.split(".")[0] == "grpc" for name in names), (
            f"{relative} touches *_pb2 but is neither in attest/wire/ nor a gRPC module"
        )


def test_the_walker_sees_relative_nested_and_dynamic_imports() -> None:
    source = (
        "from . import sibling\n"
        "from ...verifier import store\n"
        "def f():\n"
        "    import agent.daemon\n"
        "    importlib.import_module('verifier.server')\n"
    )
    names = imports_in(source, "attest.sub.probe", is_package=False)
    assert {"attest.sub.sibling", "verifier.store", "agent.daemon", "verifier.server"} <= names
    assert "attest.sub.sibling" in imports_in("from .sub import sibling", "attest", True)


def verifier_layers() -> list[tuple[list[str], bool]]:
    """The verifier's layers contract from pyproject.toml, top first: (members, independent)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    contracts = config["tool"]["importlinter"]["contracts"]
    [contract] = [c for c in contracts if c["type"] == "layers" and c["containers"] == ["verifier"]]
    return [
        ([name.strip() for name in re.split(r"[|:]", layer)], ":" not in layer)
        for layer in contract["layers"]
    ]


def _layer_of(name: str, layers: list[tuple[list[str], bool]]) -> tuple[int, str] | None:
    for index, (members, _) in enumerate(layers):
        for member in members:
            if name == f"verifier.{member}" or name.startswith(f"verifier.{member}."):
                return index, member
    return None


def test_the_store_and_the_pure_cores_are_layered_apart() -> None:
    layers = verifier_layers()
    where = {
        member: (index, independent)
        for index, (members, independent) in enumerate(layers)
        for member in members
    }
    assert where["store"] == where["pipeline"] and where["store"][1], "independent siblings"
    assert where["store"][0] < where["findings"][0] < where["model"][0] == len(layers) - 1


def test_verifier_modules_import_only_lower_layers() -> None:
    layers = verifier_layers()
    bad = []
    for path in _modules("verifier"):
        module = _module_name(path)
        own = _layer_of(module, layers)
        if own is None:
            continue
        for name in imports_of(path):
            other = _layer_of(name, layers)
            if other is None or other[1] == own[1]:
                continue
            if other[0] < own[0] or (other[0] == own[0] and layers[own[0]][1]):
                bad.append(f"{module} imports {name}")
    assert not bad, f"against the verifier's layers (pyproject.toml): {sorted(bad)}"
