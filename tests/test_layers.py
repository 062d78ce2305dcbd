"""The packages' layering: model <- quant <- hw <- sim <- CLI; no import runs backwards.

Every ``import`` in every module counts, including the ones inside functions
(a lazy import is still a dependency). ``inhibitron.hw`` may use ``model`` and
``quant`` but not ``sim`` or the CLI; ``quant`` only ``model``; ``model`` none of
them (docs/architecture.md).
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: package folder -> the inhibitron subpackages it must not import.
FORBIDDEN = {
    "model": ("quant", "hw", "sim", "commands", "cli"),
    "quant": ("hw", "sim", "commands", "cli"),
    "hw": ("sim", "commands", "cli"),
    "sim": ("commands", "cli"),
}


def _imports(path: Path, package: str):
    """(line, absolute module) of every import in ``path`` (relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ["inhibitron", package][: max(0, 2 - node.level + 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
                names = [mod] if node.module else [f"{mod}.{a.name}" for a in node.names]
            else:
                names = [node.module]
            for name in names:
                yield node.lineno, name


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_import_runs_backwards(package):
    bad = []
    for path in sorted((ROOT / package).glob("*.py")):
        for line, mod in _imports(path, package):
            parts = mod.split(".")
            if parts[0] == "inhibitron" and len(parts) > 1 and parts[1] in FORBIDDEN[package]:
                bad.append(f"{package}/{path.name}:{line} imports {mod}")
    assert not bad, "imports against the layering:\n" + "\n".join(bad)
