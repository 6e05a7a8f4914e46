"""The shipped losses' and allocators' options as their constructors declare them, in Hydra's ConfigStore.

Every class shipped as a `loss` or `allocator` option (it sets `name`) is stored as
`/schema/<group>/<Class>`: its `_target_` and each option it takes with the default its signature
gives, `**kwargs` followed to the class (or dataclass) they are passed to. A YAML option extends
that node (`defaults: [/schema/allocator/ReadBandit@_here_]`) and states only what it changes, so
the signature is the one place a default is written and `--cfg job` still prints every value.

The signatures are read from the source files, not by importing the classes: composing a config
(`--help`, `--cfg job`) must not import torch. `tests/test_option_defaults.py` checks the nodes
against the imported classes.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

PACKAGE_DIR = Path(__file__).resolve().parents[1]

# the modules whose named classes are a group's options, and the arguments each run passes them itself
GROUPS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "loss": (("capdistill.losses.modules",), ()),
    "allocator": (("capdistill.allocation.static", "capdistill.allocation.bandit"), ("capabilities", "seed")),
}


@functools.cache
def module_source(module: str) -> ast.Module:
    """A capdistill module's parsed source (`capdistill.losses.modules` -> `losses/modules.py`)."""
    return ast.parse(PACKAGE_DIR.joinpath(*module.split(".")[1:]).with_suffix(".py").read_text())


def find_class(module: str, name: str) -> tuple[str, ast.ClassDef]:
    """The class `name` as `module` sees it: defined there, or imported from another capdistill module."""
    for node in module_source(module).body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            return module, node
        if isinstance(node, ast.ImportFrom) and node.module and any(a.name == name for a in node.names):
            return find_class(node.module, name)
    raise LookupError(f"class {name} is not defined in or imported by {module}")


def literal(node: ast.expr | None, where: str) -> Any:
    """A default written as a literal; none (a required argument) is MISSING."""
    if node is None:
        return MISSING
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise ValueError(f"{where}: write the default as a literal, so the config can show it") from None


def options(module: str, cls: ast.ClassDef) -> dict[str, Any]:
    """The keyword options `cls` takes, in signature order, with their defaults (its own first, then those
    its `**kwargs` reach: the parent's `__init__` through `super()`, or a dataclass's fields)."""
    init = next((f for f in cls.body if isinstance(f, ast.FunctionDef) and f.name == "__init__"), None)
    if init is None:  # the parent's constructor
        bases = [b.id for b in cls.bases if isinstance(b, ast.Name)]
        return options(*find_class(module, bases[0])) if bases else {}
    args = init.args
    positional = args.posonlyargs + args.args
    given = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
    found = {a.arg: literal(d, f"{cls.name}.{a.arg}") for a, d in zip(positional, given) if a.arg != "self"}
    found |= {a.arg: literal(d, f"{cls.name}.{a.arg}") for a, d in zip(args.kwonlyargs, args.kw_defaults)}
    if args.kwarg is not None:
        for name, value in passed_on(module, cls, init, args.kwarg.arg).items():
            found.setdefault(name, value)
    return found


def passed_on(module: str, cls: ast.ClassDef, init: ast.FunctionDef, kwargs: str) -> dict[str, Any]:
    """The options `**kwargs` reaches: those of the call that unpacks it in `init`."""
    for call in (n for n in ast.walk(init) if isinstance(n, ast.Call)):
        unpacked = [k.value for k in call.keywords if k.arg is None]
        if not any(isinstance(n, ast.Name) and n.id == kwargs for v in unpacked for n in ast.walk(v)):
            continue
        if isinstance(call.func, ast.Attribute) and call.func.attr == "__init__":  # super().__init__(**kwargs)
            base = next(b.id for b in cls.bases if isinstance(b, ast.Name))
            return options(*find_class(module, base))
        if isinstance(call.func, ast.Name):  # a dataclass built from them, e.g. OTSettings(**ot)
            return dataclass_fields(*find_class(module, call.func.id))
    raise LookupError(f"{cls.name}.__init__ takes **{kwargs} but passes it to no constructor")


def dataclass_fields(module: str, cls: ast.ClassDef) -> dict[str, Any]:
    fields = [n for n in cls.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)]
    return {f.target.id: literal(f.value, f"{cls.name}.{f.target.id}") for f in fields}  # type: ignore[union-attr]


def option_name(cls: ast.ClassDef) -> str:
    """The class's `name = "..."` (the option it ships as and the label its runs record); '' if it sets none."""
    for node in cls.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "name" for t in node.targets):
            return node.value.value if isinstance(node.value, ast.Constant) else ""
    return ""


def schemas() -> dict[str, dict[str, dict[str, Any]]]:
    """group -> class name -> its node (`_target_` and every option with its default)."""
    found: dict[str, dict[str, dict[str, Any]]] = {}
    for group, (modules, run_arguments) in GROUPS.items():
        found[group] = {}
        for module in modules:
            for cls in module_source(module).body:
                if isinstance(cls, ast.ClassDef) and option_name(cls):
                    taken = {k: v for k, v in options(module, cls).items() if k not in run_arguments}
                    found[group][cls.name] = {"_target_": f"{module}.{cls.name}"} | taken
    return found


def register_components() -> None:
    """Store every shipped component's node as `/schema/<group>/<Class>` (idempotent)."""
    store = ConfigStore.instance()
    for group, nodes in schemas().items():
        for name, node in nodes.items():
            store.store(group=f"schema/{group}", name=name, node=node)
