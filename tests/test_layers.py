"""The package's import layering: config at the bottom, the recipe and the CLI at the top, no import
running back up a layer (function-local imports included), and no two modules sharing a name."""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

import capdistill

SRC = Path(capdistill.__file__).parent

# bottom to top (the manual lists them: docs/development.md, "Layers"); a package may import its own modules
# and any package of a lower layer
LAYERS = [
    {"errors"},
    {"io", "introspect"},
    {"config"},
    {"prompting", "results"},
    {"capabilities", "losses", "models"},
    {"training", "supervision", "evaluation"},
    {"allocation"},
    {"components"},
    {"world"},
    {"distill"},
    {"cli"},
    {"__main__"},
]
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}


def package_of(module: str) -> str:
    """`capdistill.world.build` -> `world`; `capdistill` itself (its version) sits at the bottom."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "errors"


def imports(path: Path) -> list[tuple[str, int]]:
    """Every capdistill module `path` imports, anywhere in the file, with its line."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, node.lineno))
        elif isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
    return [(m, line) for m, line in found if m == "capdistill" or m.startswith("capdistill.")]


def source_files() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if "assets" not in p.parts)


def test_every_package_has_a_layer() -> None:
    packages = {p.relative_to(SRC).parts[0].removesuffix(".py") for p in source_files()}
    assert packages - {"__init__"} <= set(LAYER), sorted(packages - set(LAYER))


def test_no_import_runs_up_a_layer() -> None:
    upward = []
    for path in source_files():
        own = path.relative_to(SRC).parts[0].removesuffix(".py")
        if own == "__init__":
            continue
        for module, line in imports(path):
            target = package_of(module)
            if target != own and LAYER[target] >= LAYER[own]:
                upward.append(f"{path.relative_to(SRC)}:{line} imports {module} ({own} -> {target})")
    assert not upward, "\n".join(upward)


def test_no_two_modules_share_a_name() -> None:
    names = Counter(p.name for p in source_files() if p.name != "__init__.py")
    assert not [n for n, k in names.items() if k > 1], names.most_common(5)


def test_the_layering_test_catches_an_upward_import(tmp_path: Path) -> None:
    """The checker itself: an import from a lower layer back up is found."""
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from capdistill.distill.run import distill\n")
    assert [package_of(m) for m, _ in imports(module)] == ["distill"]
    assert LAYER["distill"] > LAYER["config"]


def test_the_sweeper_plugin_imports_nothing_above_components() -> None:
    """`hydra_plugins/capdistill_sweeper` lives outside the package (Hydra's plugin namespace) but checks configs
    through `components`, so it sits just above it."""
    plugin = SRC.parent / "hydra_plugins" / "capdistill_sweeper"
    found = [(path, module) for path in sorted(plugin.rglob("*.py")) for module, _ in imports(path)]
    assert found, "the plugin imports capdistill: the check would pass on an empty folder"
    above = [(p.name, m) for p, m in found if LAYER[package_of(m)] > LAYER["components"]]
    assert not above, above
