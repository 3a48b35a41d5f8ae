"""The layers import one way only (docs/architecture.md): core <- adapter <- trainers <- CLI.

Read from the source (every import statement, those inside functions included), so a lazy import that
runs against the layering is caught as well as a top-level one.
"""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "nnunet_scnas"


def imported_modules(path: Path, root: Path = ROOT) -> set[str]:
    """Absolute names of the modules that `path` imports (relative imports resolved against its package)."""
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            names.add(base)
    return names


def modules_of(folder: Path, recursive: bool = True) -> list[Path]:
    return sorted(folder.rglob("*.py") if recursive else folder.glob("*.py"))


def importing(files: list[Path], forbidden: tuple[str, ...], root: Path = ROOT) -> dict[str, list[str]]:
    found = {}
    for path in files:
        bad = sorted(name for name in imported_modules(path, root)
                     if any(name == f or name.startswith(f + ".") for f in forbidden))
        if bad:
            found[str(path.relative_to(root))] = bad
    return found


@pytest.mark.parametrize("files, forbidden", [
    pytest.param(modules_of(PACKAGE, recursive=False), ("nnunet_scnas.nnunet", "nnunet_scnas.cli", "nnunetv2"),
                 id="core"),
    pytest.param(modules_of(PACKAGE / "nnunet"), ("nnunet_scnas.cli",), id="adapter"),
    pytest.param(modules_of(ROOT / "trainers"), ("nnunet_scnas.cli",), id="trainers"),
])
def test_no_module_imports_a_layer_above_its_own(files, forbidden):
    assert files, "no modules found: the layout changed, update this test"
    assert importing(files, forbidden) == {}


def test_the_check_sees_lazy_and_relative_imports(tmp_path):
    # the test above can fail: a module with a function-level import of the CLI is caught
    module = tmp_path / "nnunet_scnas" / "nnunet" / "probe.py"
    module.parent.mkdir(parents=True)
    module.write_text("def f():\n    from nnunet_scnas.cli.main import main\n    from ..cli import demo\n")
    assert importing([module], ("nnunet_scnas.cli",), root=tmp_path) == {
        "nnunet_scnas/nnunet/probe.py": ["nnunet_scnas.cli", "nnunet_scnas.cli.main"]}
