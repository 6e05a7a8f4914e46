"""Token counts written the way people write them."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capdistill.config.units import parse_tokens
from capdistill.errors import CapdistillError


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("50k", 50_000),
        ("50K", 50_000),
        ("2M", 2_000_000),
        ("2m", 2_000_000),
        ("1.5M", 1_500_000),
        ("0.5k", 500),
        ("1B", 1_000_000_000),
        ("3g", 3_000_000_000),
        (20000, 20000),
        (1, 1),
        (2.0, 2),
        ("20000", 20000),
        (" 3 k ", 3000),
        ("\t7k\n", 7000),
        ("1.50k", 1500),
    ],
)
def test_parse_tokens_accepts(value, expected):
    result = parse_tokens(value)
    assert result == expected
    assert type(result) is int


@pytest.mark.parametrize(
    "value",
    [
        0,
        -5,
        0.0,
        -1.5,
        1.5,
        "0",
        "0k",
        "-5",
        "-5k",
        "abc",
        "k",
        "",
        " ",
        "1.5",
        "0.0001k",
        "5 kk",
        "5t",
        "1,000",
        "1e6",
        True,
        False,
    ],
)
def test_parse_tokens_rejects(value):
    with pytest.raises(CapdistillError, match=r"budget\.total_tokens"):
        parse_tokens(value)


def test_error_names_the_argument():
    with pytest.raises(CapdistillError, match=r"^probe\.tokens: .*'abc'"):
        parse_tokens("abc", name="probe.tokens")
    with pytest.raises(CapdistillError, match=r"^probe\.tokens: .*'0k'"):
        parse_tokens("0k", name="probe.tokens")
    with pytest.raises(CapdistillError, match=r"^probe\.tokens: .*True"):
        parse_tokens(True, name="probe.tokens")


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 10**12))
def test_whole_numbers_round_trip(n):
    assert parse_tokens(n) == n
    assert parse_tokens(str(n)) == n
    assert parse_tokens(f" {n} ") == n


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 10**6), st.sampled_from([("k", 10**3), ("M", 10**6), ("B", 10**9)]))
def test_suffixes_multiply(n, suffix):
    letter, factor = suffix
    assert parse_tokens(f"{n}{letter}") == n * factor
    assert parse_tokens(f"{n}{letter.lower()}") == n * factor


@pytest.mark.parametrize("value", ["2.01M", "4.1M", "8.2M", "2.01k"])
def test_decimal_with_suffix_is_exact(value):
    number, suffix = value[:-1], value[-1].lower()
    expected = int(round(float(number) * {"k": 10**3, "m": 10**6}[suffix]))
    assert parse_tokens(value) == expected


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_floats_raise_capdistill_error(value):
    with pytest.raises(CapdistillError):
        parse_tokens(value)


def test_huge_ints_are_exact():
    assert parse_tokens(2**53 + 1) == 2**53 + 1
