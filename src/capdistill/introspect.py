"""Which config options a class's constructor accepts (losses, allocators): one source of truth."""

from __future__ import annotations

import inspect


def init_options(cls: type, skip: tuple[str, ...] = ()) -> list[str]:
    """Named parameters of `cls.__init__` along its MRO, following `**kwargs` to the parents.

    Stops at the first constructor without `**kwargs` (it passes nothing else on).
    """
    names: list[str] = []
    for klass in cls.__mro__:
        if "__init__" not in vars(klass) or klass is object:
            continue
        params = inspect.signature(klass.__init__).parameters.values()
        for p in params:
            named = p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
            if named and p.name != "self" and p.name not in skip and p.name not in names:
                names.append(p.name)
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return sorted(names)
