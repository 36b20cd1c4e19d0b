"""House rules that a reviewer would otherwise check by hand."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
LIBRARY = ("distill", "models", "selection")
MAX_LINES = 80


def _functions(packages):
    for pkg in packages:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            for node in ast.walk(tree):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    yield path.relative_to(ROOT), node


def test_no_library_function_over_80_lines():
    long = [f"{p}:{n.lineno} {n.name} ({n.end_lineno - n.lineno + 1} lines)"
            for p, n in _functions(LIBRARY) if n.end_lineno - n.lineno + 1 > MAX_LINES]
    assert not long, "functions over 80 lines (signature and docstring included):\n" + "\n".join(long)


def test_optax_updates_only_in_the_two_loops():
    users = sorted({str(p.relative_to(ROOT)) for pkg in LIBRARY for p in (ROOT / pkg).rglob("*.py")
                    if "apply_updates" in p.read_text()})
    assert users == ["distill/loop.py", "distill/train.py"], users


@pytest.mark.parametrize("pkg", LIBRARY + ("benchmarks", "tests"))
def test_no_private_imports_across_packages(pkg):
    bad = []
    for path in sorted((ROOT / pkg).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                top = node.module.split(".")[0]
                for alias in node.names:
                    private = alias.name.startswith("_") or any(part.startswith("_") for part in node.module.split("."))
                    if private and top in LIBRARY and top != pkg and node.module != "__future__":
                        bad.append(f"{path.relative_to(ROOT)}:{node.lineno} from {node.module} import {alias.name}")
    assert not bad, "\n".join(bad)
