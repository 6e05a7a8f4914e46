"""Statistics over seeds: Student-t 95% confidence intervals and paired differences against a baseline.

Seeds are common random numbers: for a given seed every allocator draws the same prompt streams
and is scored on the same eval items, so most of the seed-to-seed spread is shared. Allocators are
therefore compared by per-seed (paired) differences against a baseline, whose interval is far
narrower than two unpaired intervals side by side.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import pandas as pd
from scipy.stats import t as student_t

from capdistill.errors import CapdistillError

LEVEL = 0.95
# the columns that, with the seed, identify one setting: a variant's run pairs with the
# baseline's run that agrees on all of them that the table has
SETTING = ("experiment", "task", "loss", "budget_tokens")


MIN_CI_N = 3  # fewer values give no interval: with 2, Student-t's factor is 12.7 and the interval says nothing


def mean_ci(values: Iterable[float]) -> tuple[float, float | None, int]:
    """Mean, Student-t 95% half-width (None below `MIN_CI_N` values: no interval) and count of the non-NaN
    `values`."""
    sample = pd.Series(list(values), dtype=float).dropna()
    n = len(sample)
    if n < MIN_CI_N:
        return (float(sample.mean()) if n else math.nan), None, n
    half = student_t.ppf(0.5 + LEVEL / 2, n - 1) * sample.std(ddof=1) / math.sqrt(n)
    return float(sample.mean()), float(half), n


def summarize(table: pd.DataFrame, by: Sequence[str], value: str) -> pd.DataFrame:
    """Per group of `by`: mean of `value`, its Student-t 95% half-width `ci` (NaN for one run) and `n`."""
    rows = []
    for key, values in table.groupby(list(by), sort=True)[value]:
        mean, ci, n = mean_ci(values)
        rows.append({**dict(zip(by, key)), "mean": mean, "ci": math.nan if ci is None else ci, "n": n})
    return pd.DataFrame(rows, columns=[*by, "mean", "ci", "n"])


def paired(
    table: pd.DataFrame, baseline: str, value: str = "task_utility", by: Sequence[str] = ("budget_tokens",)
) -> pd.DataFrame:
    """Per variant other than `baseline` and group of `by`: the mean per-seed difference variant - baseline of
    `value`, its Student-t 95% half-width `ci`, the number `n` of pairs, and both sides' means over those pairs.

    A run pairs with the baseline's run of the same seed and setting (the `SETTING` columns the table
    has); runs without a partner are left out. Repeated runs of one variant and pair are averaged first.
    """
    variants = sorted(table["variant"].unique())
    if baseline not in variants:
        raise CapdistillError(f"unknown baseline {baseline!r}; the table's variants: {', '.join(variants)}")
    keys = list(dict.fromkeys(["seed", *by, *(c for c in SETTING if c in table.columns)]))
    runs = table.dropna(subset=[value]).groupby(["variant", *keys], as_index=False, dropna=False)[value].mean()
    base = runs[runs["variant"] == baseline].drop(columns="variant").rename(columns={value: "baseline_mean"})
    pairs = runs[runs["variant"] != baseline].rename(columns={value: "variant_mean"}).merge(base, on=keys)
    if pairs.empty:
        raise CapdistillError(f"no run of another variant shares a seed and setting with the baseline {baseline!r}")
    pairs["difference"] = pairs["variant_mean"] - pairs["baseline_mean"]
    means = pairs.groupby(["variant", *by], as_index=False)[["variant_mean", "baseline_mean"]].mean()
    return summarize(pairs, ["variant", *by], "difference").merge(means, on=["variant", *by])


def over_tasks(table: pd.DataFrame) -> pd.DataFrame:
    """The table with each run unit as the mean over the table's tasks (the paper's average utility over tasks).

    A unit is a variant's runs of one seed and setting but the task; each numeric column becomes its mean over
    the unit's tasks (repeated runs of a task averaged first), and `task` says how many tasks it averages. Only
    units that have every task count: a mean over fewer tasks is another quantity. The seeds stay the paired
    units, so differences and intervals are over seeds, each the mean of its tasks' differences."""
    tasks = sorted(table["task"].unique())
    keys = list(dict.fromkeys(["variant", "seed", *(c for c in (*SETTING, "allocator", "figure") if c in table)]))
    keys.remove("task")
    numeric = [c for c in table.select_dtypes("number").columns if c not in keys]
    per_task = table.groupby([*keys, "task"], as_index=False, dropna=False)[numeric].mean()
    complete = per_task.groupby(keys, dropna=False)["task"].transform("nunique") == len(tasks)
    units = per_task[complete].groupby(keys, as_index=False, dropna=False)[numeric].mean()
    return units.assign(task=f"mean of {len(tasks)} tasks")


def cell(
    mean: float,
    ci: float | None,
    n: int,
    signed: bool = False,
    digits: int = 1,
    bounds: tuple[float, float] | None = None,
) -> str:
    """'12.3 ± 1.4 (n=5)'; '12.3 (n=2)' without an interval; `signed` for differences: '+1.2 ± 0.8 (n=5)'. A
    quantity with a range (`bounds`, e.g. a rate in 0-100) whose interval crosses it gets the clipped interval:
    '5.0 [0.0, 13.0] (n=4)'."""
    text = f"{mean:+.{digits}f}" if signed else f"{mean:.{digits}f}"
    if ci is not None and not math.isnan(ci):
        if bounds is not None and (mean - ci < bounds[0] or mean + ci > bounds[1]):
            low, high = max(mean - ci, bounds[0]), min(mean + ci, bounds[1])
            text += f" [{low:.{digits}f}, {high:.{digits}f}]"
        else:
            text += f" ± {ci:.{digits}f}"
    return f"{text} (n={n})"
