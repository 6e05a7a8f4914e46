"""Seed statistics: Student-t intervals, paired differences against a baseline, and the table cells."""

from __future__ import annotations

import copy
import math
import statistics

import pandas as pd
import pytest

from capdistill.errors import CapdistillError
from capdistill.results.collect import record_row, round_rows
from capdistill.results.stats import cell, mean_ci, over_tasks, paired, summarize

T_975_4 = 2.776445  # Student-t 97.5% quantile, 4 degrees of freedom (tables)


def test_mean_ci_is_the_student_t_interval() -> None:
    mean, half, n = mean_ci([1, 2, 3, 4, 5])
    assert (mean, n) == (3.0, 5)
    assert half == pytest.approx(T_975_4 * statistics.stdev([1, 2, 3, 4, 5]) / math.sqrt(5), rel=1e-6)


def test_one_or_two_runs_have_no_interval() -> None:
    assert mean_ci([12.34]) == (12.34, None, 1)
    assert mean_ci([0.0, 75.0]) == (37.5, None, 2)  # Student-t's factor with 1 degree of freedom is 12.7
    summary = summarize(pd.DataFrame({"variant": ["a"], "task_utility": [12.34]}), ["variant"], "task_utility")
    assert math.isnan(summary["ci"].iloc[0]) and summary["n"].iloc[0] == 1
    assert cell(12.34, None, 1) == cell(12.34, summary["ci"].iloc[0], 1) == "12.3 (n=1)"


def test_cells() -> None:
    assert cell(12.34, 1.44, 5) == "12.3 ± 1.4 (n=5)"
    assert cell(1.2, 0.8, 5, signed=True) == "+1.2 ± 0.8 (n=5)"
    assert cell(-1.2, None, 1, signed=True) == "-1.2 (n=1)"


def test_a_rate_s_interval_is_clipped_to_its_range() -> None:
    """The demo once printed '37.5 ± 476.5 (n=2)' for a percentage: an interval crossing 0 or 100 is clipped."""
    assert cell(5.0, 8.0, 4, bounds=(0.0, 100.0)) == "5.0 [0.0, 13.0] (n=4)"
    assert cell(95.8, 4.3, 18, bounds=(0.0, 100.0)) == "95.8 [91.5, 100.0] (n=18)"
    assert cell(50.0, 4.0, 4, bounds=(0.0, 100.0)) == "50.0 ± 4.0 (n=4)"  # inside its range: symmetric


NOISE = [0.01, -0.02, 0.015, 0.0, -0.01]


def crossed_table() -> pd.DataFrame:
    """`better` = `base` + 2 (+ tiny noise) on every seed, while seeds differ by 30 points, at two budgets."""
    rows = []
    for budget, (seed, noise) in zip([1000] * 5 + [2000] * 5, [*enumerate(NOISE)] * 2):
        base = 30.0 * seed + budget / 100
        rows.append({"variant": "base", "seed": seed, "budget_tokens": budget, "loss": "sft", "task_utility": base})
        rows.append(
            {
                "variant": "better",
                "seed": seed,
                "budget_tokens": budget,
                "loss": "sft",
                "task_utility": base + 2 + noise,
            }
        )
    return pd.DataFrame(rows)


def test_paired_differences_are_taken_per_seed() -> None:
    table = crossed_table()
    pairs = paired(table, "base").set_index("budget_tokens")
    assert list(pairs["variant"]) == ["better", "better"] and list(pairs["n"]) == [5, 5]
    for budget, row in pairs.iterrows():
        # brute force: the difference of each seed's two runs
        part = table[table["budget_tokens"] == budget]
        side = {v: dict(zip(p["seed"], p["task_utility"])) for v, p in part.groupby("variant")}
        mean, half, n = mean_ci([side["better"][s] - side["base"][s] for s in side["base"]])
        assert (row["mean"], row["ci"], row["n"]) == (pytest.approx(mean), pytest.approx(half), n)
        assert row["variant_mean"] == pytest.approx(statistics.mean(side["better"].values()))
        assert row["baseline_mean"] == pytest.approx(statistics.mean(side["base"].values()))
        assert row["mean"] - row["ci"] > 0 and row["ci"] < 0.05  # narrow, and excludes 0
    unpaired = summarize(table, ["budget_tokens", "variant"], "task_utility").set_index(["budget_tokens", "variant"])
    for budget in (1000, 2000):
        better, base = unpaired.loc[(budget, "better")], unpaired.loc[(budget, "base")]
        assert better["mean"] - better["ci"] < base["mean"] + base["ci"]  # unpaired intervals overlap


def test_pairs_match_every_setting_column() -> None:
    table = crossed_table()
    other = table.assign(loss="fkl", task_utility=table["task_utility"] + 100 * (table["variant"] == "base"))
    pairs = paired(pd.concat([table, other]), "base", by=("budget_tokens", "loss")).set_index("loss")
    assert pairs.loc["sft", "mean"].tolist() == pytest.approx([2.0, 2.0], abs=0.05)
    assert pairs.loc["fkl", "mean"].tolist() == pytest.approx([-98.0, -98.0], abs=0.05)


def test_seeds_without_a_partner_are_left_out() -> None:
    table = crossed_table()
    extra = pd.DataFrame(
        [
            {"variant": "better", "seed": 9, "budget_tokens": 1000, "loss": "sft", "task_utility": 500.0},
            {"variant": "base", "seed": 8, "budget_tokens": 1000, "loss": "sft", "task_utility": -500.0},
        ]
    )
    pairs = paired(pd.concat([table, extra]), "base").set_index("budget_tokens")
    assert pairs.loc[1000, "n"] == 5
    assert pairs.loc[1000, "mean"] == pytest.approx(2 + statistics.mean(NOISE))
    assert pairs.loc[1000, "baseline_mean"] == pytest.approx(statistics.mean(30.0 * s + 10 for s in range(5)))


def test_an_unknown_baseline_names_the_variants() -> None:
    with pytest.raises(CapdistillError, match="unknown baseline 'static'; the table's variants: base, better") as err:
        paired(crossed_table(), "static")
    assert "\n" not in str(err.value)


def test_a_baseline_with_no_partner_run_is_named() -> None:
    table = crossed_table()
    unpaired = table.assign(seed=table["seed"].where(table["variant"] == "base", 99))  # `better` on another seed
    with pytest.raises(CapdistillError, match="no run of another variant shares a seed and setting with .*'base'"):
        paired(unpaired, "base")


RECORD = {
    "config": {"allocator": {"name": "uniform"}, "loss": {"name": "sft"}, "task": {"name": "t"}},
    "seed": 0,
    "budget": {"total_tokens": 100, "spent_tokens": 90, "spent_by_capability": {"math": 90, "code": 0}},
    "rounds": [
        {
            "round": 0,
            "allocation": {"math": 1.0, "code": 0.0},
            "spent_by_capability": {"math": 90, "code": 0},
            "probe": {"math": 40.0, "code": 10.0},
            "probe_loglik": {"math": -1.0, "code": -2.0},
            "task_utility": 20.0,
        }
    ],
    "final": {
        "probe": {"math": 40.0, "code": 10.0},
        "probe_loglik": {"math": -1.0, "code": -2.0},
        "task_utility": 20.0,
    },
    "reference": {
        "teacher": {"task_utility": 80.0},
        "student_base": {"probe": {"math": 30.0, "code": 12.0}, "task_utility": 10.0},
    },
    "timing": {"total_s": 1.0},
}


def test_older_records_collect_with_the_new_columns_empty() -> None:
    row, [step] = record_row(RECORD, "r"), round_rows(RECORD, "r")
    assert row["task_utility"] == 20.0 and row["probe/math"] == 40.0 and row["loglik/code"] == -2.0
    assert row["eval_split"] is None
    for column in ("task_utility_n", "task_utility_se", "dev_task_utility", "task_loglik"):
        assert math.isnan(row[column])
    assert step["task_utility"] == 20.0 and step["loglik/math"] == -1.0 and math.isnan(step["task_loglik"])
    assert row["variant"] == "uniform"


def test_a_curriculum_run_is_its_own_variant() -> None:
    record = copy.deepcopy(RECORD)
    record["config"]["distill"] = {"curriculum": {"stages": [{"until": 1.0, "mix": [1.0]}]}}
    assert record_row(record, "r")["variant"] == "uniform+curriculum"
    record["config"]["distill"] = {"curriculum": {"stages": []}}
    assert record_row(record, "r")["variant"] == "uniform"


def test_negative_transfer_counts_the_unspent_capabilities_that_fell_below_the_base() -> None:
    """Brute force over a four-capability record: math was distilled; of the three it never spent
    on, code and safety ended below the student base, tool_use above."""
    record = copy.deepcopy(RECORD)
    record["budget"]["spent_by_capability"] = {"math": 90, "code": 0, "safety": 0, "tool_use": 0}
    record["final"]["probe"] = {"math": 40.0, "code": 10.0, "safety": 49.0, "tool_use": 8.0}
    record["reference"]["student_base"]["probe"] = {"math": 30.0, "code": 12.0, "safety": 50.0, "tool_use": 5.0}
    row = record_row(record, "r")
    assert row["negative_transfer_rate"] == pytest.approx(100 * 2 / 3) and row["on_target_change"] == 10.0
    assert row["negative_spillover"] == pytest.approx(-3.0) and row["off_target_change"] == pytest.approx(0.0)
    assert "dev_negative_transfer_rate" not in row  # the base has no dev proxy per capability: no dev columns
    # the same statistics on dev, from the dev proxy's change over the base: only tool_use fell below it
    record["final"]["probe_loglik"] = {"math": -1.0, "code": -2.0, "safety": -3.0, "tool_use": -4.5}
    record["reference"]["student_base"]["probe_loglik"] = {"math": -1.5, "code": -2.25, "safety": -3.0, "tool_use": -4}
    row = record_row(record, "r")
    assert row["dev_delta/math"] == 0.5 and row["dev_on_target_change"] == 0.5
    assert row["dev_negative_transfer_rate"] == pytest.approx(100 / 3)
    assert row["dev_off_target_change"] == pytest.approx((0.25 + 0.0 - 0.5) / 3)
    assert "dev_em_negative_transfer_rate" not in row  # no dev exact match per capability (evaluation.dev_probe)
    # and in exact match on dev (evaluation.dev_probe): code and tool_use fell below the base, safety did not
    record["final_dev"] = {"split": "dev", "task_utility": 20.0, "n": 8, "probe": {"math": 50.0, "code": 0.0}}
    record["final_dev"]["probe"] |= {"safety": 25.0, "tool_use": 10.0}
    record["reference"]["student_base"]["dev_probe"] = {"math": 25.0, "code": 12.5, "safety": 25.0, "tool_use": 12.5}
    row = record_row(record, "r")
    assert row["dev_em_delta/math"] == 25.0 and row["dev_em_on_target_change"] == 25.0
    assert row["dev_em_negative_transfer_rate"] == pytest.approx(200 / 3)
    assert row["dev_em_off_target_change"] == pytest.approx((-12.5 + 0.0 - 2.5) / 3) and row["dev_probe/code"] == 0.0
    # a replay slice (budget.replay) spends on every capability; off target are still those the allocator did not
    # choose: the same statistics
    record["budget"]["spent_by_capability"] = dict.fromkeys(record["budget"]["spent_by_capability"], 10)
    record["config"]["budget"] = {"replay": 0.1}
    row = record_row(record, "r")
    assert row["negative_transfer_rate"] == pytest.approx(100 * 2 / 3) and row["on_target_change"] == 10.0
    assert row["variant"] == "uniform+replay=0.1"
    record["rounds"][0]["allocation"] = dict.fromkeys(record["budget"]["spent_by_capability"], 0.25)
    assert math.isnan(record_row(record, "r")["negative_transfer_rate"])  # nothing off target


def test_new_records_give_the_binomial_error_dev_score_and_rounds_between_checkpoints() -> None:
    record = copy.deepcopy(RECORD)
    record["final"].update(
        n={"math": 50, "code": 50, "task": 64},
        splits={"probe": "eval", "task_utility": "eval", "probe_loglik": "dev", "task_loglik": "dev"},
        task_loglik=-1.5,
    )
    record["final_dev"] = {"split": "dev", "task_utility": 25.0, "n": 32}
    checkpoint = record["rounds"][0]
    record["rounds"] = [
        {k: v for k, v in checkpoint.items() if k not in ("probe", "task_utility")} | {"task_loglik": -1.7},
        checkpoint | {"round": 1},
    ]
    row = record_row(record, "r")
    assert (row["task_utility_n"], row["dev_task_utility"], row["eval_split"]) == (64, 25.0, "eval")
    assert row["task_utility_se"] == pytest.approx(100 * math.sqrt(0.2 * 0.8 / 64)) and row["task_loglik"] == -1.5
    between, at = round_rows(record, "r")
    assert math.isnan(between["task_utility"]) and math.isnan(between["probe/math"]) and between["task_loglik"] == -1.7
    assert between["loglik/math"] == -1.0 and at["probe/math"] == 40.0


def two_tasks() -> pd.DataFrame:
    """`better` beats `base` by 2 on task a and loses 1 on task b, per seed (plus noise); seeds differ by 30 points;
    seed 5 has task a only, so its mean over tasks does not exist."""
    rows = []
    for seed, noise in enumerate(NOISE):
        for task, gap in (("a", 2.0), ("b", -1.0)):
            base = 30.0 * seed + (10 if task == "b" else 0)
            for variant, utility in (("base", base), ("better", base + gap + noise * (task == "a"))):
                rows.append(
                    {
                        "variant": variant,
                        "seed": seed,
                        "budget_tokens": 1000,
                        "loss": "sft",
                        "task": task,
                        "task_utility": utility,
                        "probe/math": utility / 2,
                    }
                )
    rows += [
        {
            "variant": v,
            "seed": 5,
            "budget_tokens": 1000,
            "loss": "sft",
            "task": "a",
            "task_utility": 99.0,
            "probe/math": 0.0,
        }
        for v in ("base", "better")
    ]
    return pd.DataFrame(rows)


def test_the_mean_over_tasks_pairs_seeds_each_averaged_over_its_tasks() -> None:
    table = two_tasks()
    units = over_tasks(table)
    assert sorted(units["seed"].unique()) == [0, 1, 2, 3, 4]  # seed 5 lacks task b: left out
    assert set(units["task"]) == {"mean of 2 tasks"} and len(units) == 10
    for _, unit in units.iterrows():  # brute force: the mean of the seed's two runs
        runs = table[(table["variant"] == unit["variant"]) & (table["seed"] == unit["seed"])]
        assert unit["task_utility"] == pytest.approx(runs["task_utility"].mean())
        assert unit["probe/math"] == pytest.approx(runs["probe/math"].mean())
    pairs = paired(units, "base").iloc[0]
    by_seed = [(2.0 + noise - 1.0) / 2 for noise in NOISE]  # each seed: the mean of its two tasks' differences
    mean, half, n = mean_ci(by_seed)
    assert (pairs["mean"], pairs["ci"], pairs["n"]) == (pytest.approx(mean), pytest.approx(half), 5)
