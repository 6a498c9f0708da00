"""The layers of ARCHITECTURE.md hold: no module imports a layer above its own, at module level or inside a
function, and nothing imports Poise's packages by their folder names instead of `poise.*`."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("registry", "agents", "pipelines", "ui")
# Most specific prefix first; a higher number is a higher layer.
LAYERS = (
    ("poise.pipelines.api", 5), ("poise.pipelines.cli", 5), ("poise.pipelines.cli_options", 5),
    ("poise.ui", 4),
    ("poise.pipelines", 3),
    ("poise.agents.errors", 0),
    ("poise.agents", 2),
    ("poise.registry", 1),
)


def layer_of(module: str) -> int | None:
    for prefix, layer in LAYERS:
        if module == prefix or module.startswith(prefix + "."):
            return layer
    return None


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(["poise", *parts])


def imports_of(path: Path, module: str) -> list[tuple[int, str]]:
    """(line, imported module) for every import in the file, relative ones resolved."""
    found = []
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names if layer_of(target)]
    return found


def poise_modules() -> list[Path]:
    return sorted(path for folder in FOLDERS for path in (ROOT / folder).rglob("*.py"))


def test_every_module_has_a_layer():
    assert poise_modules()
    assert [str(path) for path in poise_modules() if layer_of(module_name(path)) is None] == []


def test_no_module_imports_a_higher_layer():
    violations = []
    for path in poise_modules():
        module = module_name(path)
        own = layer_of(module)
        for line, imported in imports_of(path, module):
            layer = layer_of(imported)
            if layer is not None and layer > own:
                violations.append(f"{path.relative_to(ROOT)}:{line} ({module}, layer {own}) imports {imported} "
                                  f"(layer {layer})")
    assert violations == []


def test_packages_are_imported_as_poise():
    bare = []
    for path in [*poise_modules(), *sorted((ROOT / "tests").rglob("*.py")), *sorted((ROOT / "benchmarks").rglob("*.py"))]:
        for line, imported in imports_of(path, "outside.module"):
            if imported.split(".")[0] in FOLDERS:
                bare.append(f"{path.relative_to(ROOT)}:{line} imports {imported}")
    assert bare == []


def test_the_checker_sees_an_upward_import(tmp_path):
    """The rule can fail: an agent module importing the pipelines layer inside a function is caught."""
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from poise.pipelines.settings import Settings\n    return Settings\n")
    upward = [imported for _, imported in imports_of(probe, "poise.agents.probe")
              if (layer_of(imported) or 0) > layer_of("poise.agents.probe")]
    assert upward and upward[0] == "poise.pipelines.settings"
