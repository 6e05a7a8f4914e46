"""Parse token counts written the way people write them: 50k, 2M, 1.5M, 20000."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from capdistill.errors import CapdistillError

_SUFFIX = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9}
_PATTERN = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([kKmMbBgG]?)\s*$")


def parse_tokens(value: int | float | str, name: str = "budget.total_tokens") -> int:
    """A positive whole number of tokens from an int or a string like '50k' / '2M' (exact decimal arithmetic)."""
    malformed = CapdistillError(f"{name}: expected a token count like 50000, '50k' or '2M', got {value!r}")
    if isinstance(value, bool):
        raise malformed
    if isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, float):
        try:
            number = Decimal(repr(value))
        except InvalidOperation:
            raise malformed from None
    else:
        match = _PATTERN.match(str(value))
        if not match:
            raise malformed
        number = Decimal(match.group(1)) * _SUFFIX[match.group(2).lower()]
    if not number.is_finite() or number != number.to_integral_value() or number <= 0:
        raise CapdistillError(f"{name}: must be a positive whole number of tokens, got {value!r}")
    return int(number)
