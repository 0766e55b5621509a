"""The shape of the source tree: imports point one way, and private names stay home.

* tokenizer/ has no import cycle: every module imports alone in a fresh interpreter, and
  the graph of its imports (read with ast, deferred ones inside functions included) has
  no cycle.
* No module of llama/, tokenizer/, weights/ or scripts/ imports a `_private` name from
  another module: what crosses a module boundary is public.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("llama", "tokenizer", "weights", "scripts")


def module_name(path: Path) -> str:
    return module_name_in(path, ROOT)


def module_name_in(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(package: str) -> dict[str, Path]:
    return {module_name(p): p for p in sorted((ROOT / package).rglob("*.py"))}


def absolute(importer: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module a `from X import ...` names."""
    if not node.level:
        return node.module or ""
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(path: Path, name: str) -> set[str]:
    """Every module `name` imports, at the top or deferred inside a function (a deferred
    import only hides a cycle: the two modules still need each other)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            target = absolute(name, path.name == "__init__.py", node)
            out.add(target)
            out |= {f"{target}.{a.name}" for a in node.names}  # `from . import sub`
    return out


def import_cycle(package: str, root: Path = ROOT) -> list[str] | None:
    """One cycle among a package's modules (as a list of names), or None."""
    mods = {module_name_in(p, root): p for p in sorted((root / package).rglob("*.py"))}
    graph = {m: {t for t in imports_of(p, m) if t in mods and t != m} for m, p in mods.items()}
    # A package's __init__ runs before its modules; an edge *to* "tokenizer" is implied by
    # every submodule, so only edges between submodules can form a cycle.
    graph = {m: {t for t in ts if t != "tokenizer"} for m, ts in graph.items()}
    seen: dict[str, str] = {}

    def visit(m: str, stack: list[str]) -> list[str] | None:
        seen[m] = "open"
        for t in sorted(graph[m]):
            if seen.get(t) == "open":
                return stack[stack.index(t):] + [t]
            if t not in seen and (cycle := visit(t, stack + [t])):
                return cycle
        seen[m] = "done"
        return None

    for m in graph:
        if m not in seen and (cycle := visit(m, [m])):
            return cycle
    return None


def test_tokenizer_modules_have_no_import_cycle():
    cycle = import_cycle("tokenizer")
    assert cycle is None, "import cycle in tokenizer/: " + " -> ".join(cycle)


def test_the_cycle_check_sees_a_deferred_cycle(tmp_path):
    """base.py importing chat inside a method, chat.py importing base: a cycle (as it was)."""
    pkg = tmp_path / "tokenizer"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from .base import Tokenizer\n")
    (pkg / "base.py").write_text("class Tokenizer:\n    def chat(self):\n        from .chat import render\n")
    (pkg / "chat.py").write_text("from .base import Tokenizer\n")
    assert import_cycle("tokenizer", tmp_path) == ["tokenizer.base", "tokenizer.chat", "tokenizer.base"]


@pytest.mark.parametrize("module", sorted(modules("tokenizer")))
def test_each_tokenizer_module_imports_alone(module):
    result = subprocess.run([sys.executable, "-c", f"import {module}"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_no_private_name_crosses_a_module_boundary():
    crossings = []
    for package in PACKAGES:
        for name, path in modules(package).items():
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if not isinstance(node, ast.ImportFrom) or node.module == "__future__":
                    continue
                source = absolute(name, path.name == "__init__.py", node)
                for alias in node.names:
                    private = alias.name.startswith("_") and not alias.name.startswith("__")
                    if private and source != name:
                        crossings.append(f"{path.relative_to(ROOT)}:{node.lineno} imports "
                                         f"{alias.name} from {source}")
    assert not crossings, "private names imported across modules:\n" + "\n".join(crossings)


def test_the_scan_sees_a_private_import():
    """The scan above can fail: it catches `from .x import _y` and absolute forms."""
    tree = ast.parse("from .convert import _qk_heads\nfrom llama.model import _secret\n")
    found = [(absolute("weights.hf", False, n), [a.name for a in n.names]) for n in tree.body]
    assert found == [("weights.convert", ["_qk_heads"]), ("llama.model", ["_secret"])]
