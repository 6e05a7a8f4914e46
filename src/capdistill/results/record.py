"""The per-run result record (`record.json`): its required keys and a structural check.

Later work adds keys; it never renames these (users and `capdistill collect` rely on them).
"""

from __future__ import annotations

from typing import Any

from capdistill.errors import CapdistillError

RECORD_FILE = "record.json"

# key -> required sub-keys (None: any value)
TOP_LEVEL: dict[str, tuple[str, ...] | None] = {
    "config": None,
    "seed": None,
    "version": None,
    "budget": (
        "total_tokens",
        "spent_tokens",
        "spent_by_capability",
        "teacher_generated_tokens",
        "student_trained_tokens",
    ),
    "rounds": None,
    "final": ("probe", "probe_loglik", "task_utility"),
    "reference": ("teacher", "student_base"),
    "timing": ("generation_s", "training_s", "probing_s", "total_s"),
}
# every round carries its allocation and spend, and the dev signals its allocator read; rounds
# that were evaluation checkpoints (the last always is) carry every dev signal and the eval
# scores too, and `splits` names the split of each
ROUND_KEYS = ("allocation", "spent_by_capability")
CHECKPOINT_KEYS = ("probe", "task_utility", "probe_loglik", "task_loglik")


def check_record(record: dict[str, Any]) -> None:
    """Raise naming the first missing or inconsistent part of a record (the schema later work extends)."""
    for key, subkeys in TOP_LEVEL.items():
        if key not in record:
            raise CapdistillError(f"record: missing key {key!r}")
        for sub in subkeys or ():
            if sub not in record[key]:
                raise CapdistillError(f"record: missing key {key}.{sub}")
    for i, entry in enumerate(record["rounds"]):
        last = i == len(record["rounds"]) - 1
        missing = [k for k in ROUND_KEYS + (CHECKPOINT_KEYS if last else ()) if k not in entry]
        if missing:
            raise CapdistillError(f"record: rounds[{i}] lacks {missing[0]!r}")
    budget = record["budget"]
    if budget["spent_tokens"] > budget["total_tokens"]:
        raise CapdistillError(f"record: spent {budget['spent_tokens']} tokens of a {budget['total_tokens']} budget")
    if sum(budget["spent_by_capability"].values()) != budget["spent_tokens"]:
        raise CapdistillError("record: budget.spent_by_capability does not sum to budget.spent_tokens")
    by_round = sum(sum(r["spent_by_capability"].values()) for r in record["rounds"])
    if by_round != budget["spent_tokens"]:
        raise CapdistillError("record: the rounds' spend does not sum to budget.spent_tokens")
