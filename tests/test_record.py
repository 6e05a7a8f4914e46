"""The record's structural check names what is missing or inconsistent."""

from __future__ import annotations

import copy

import pytest

from capdistill.errors import CapdistillError
from capdistill.results.record import check_record

ROUND = {
    "allocation": {"math": 1.0},
    "spent_by_capability": {"math": 40},
    "probe": {},
    "probe_loglik": {},
    "task_loglik": 0.0,
}
RECORD = {
    "config": {},
    "seed": 0,
    "version": "0",
    "budget": {
        "total_tokens": 50,
        "spent_tokens": 40,
        "spent_by_capability": {"math": 40},
        "teacher_generated_tokens": 45,
        "student_trained_tokens": 90,
    },
    "rounds": [{**ROUND, "task_utility": 1.0}],
    "final": {"probe": {}, "probe_loglik": {}, "task_utility": 1.0},
    "reference": {"teacher": {}, "student_base": {}},
    "timing": {"generation_s": 0, "training_s": 0, "probing_s": 0, "total_s": 0},
}


def test_a_complete_record_passes() -> None:
    check_record(RECORD)


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda r: r.pop("timing"), "missing key 'timing'"),
        (lambda r: r["budget"].pop("teacher_generated_tokens"), "budget.teacher_generated_tokens"),
        (lambda r: r["rounds"][0].pop("task_utility"), "rounds\\[0\\] lacks 'task_utility'"),
        (lambda r: r["budget"].update(total_tokens=30), "spent 40 tokens of a 30 budget"),
        (lambda r: r["budget"]["spent_by_capability"].update(math=39), "does not sum"),
        (lambda r: r["rounds"][0]["spent_by_capability"].update(math=41), "rounds' spend"),
    ],
)
def test_bad_records_are_named(edit, needle: str) -> None:
    record = copy.deepcopy(RECORD)
    edit(record)
    with pytest.raises(CapdistillError, match=needle):
        check_record(record)
