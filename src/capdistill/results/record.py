"""The per-run result record (`record.json`) and its round entries: typed where they are written,
serialised to the JSON keys users and `capdistill collect` rely on, and a structural check.

Later work adds keys; it never renames these.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
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


@dataclass
class RoundEntry:
    """One round of a run: what the allocator chose, what was spent, trained and measured.

    `signals` are the dev proxies measured after the round (`probe_loglik`, `task_loglik`); `scores`
    the eval exact match at evaluation checkpoints (`probe`, `task_utility`, `n`). Both are written
    at the entry's top level, as `splits` names their split."""

    round: int
    allocation: dict[str, float]
    allotted_tokens: int
    allotted_by_capability: dict[str, int]
    spent_by_capability: dict[str, int]
    examples_by_capability: dict[str, int]
    prompts_by_capability: dict[str, int]
    truncated_examples: int
    shortfall_tokens: int
    teacher_generated_tokens: int
    student_trained_tokens: int
    train_steps: int
    train_loss: dict[str, float] | None  # the round's first and last batch loss (None: nothing trained)
    teacher_cache: dict[str, Any] | None = None  # the teacher logit cache of the round's supervision, if kept
    difficulty_mix: list[float] | None = None  # the curriculum's share of prompts per level, easiest first, if any
    signals: dict[str, Any] = field(default_factory=dict)
    scores: dict[str, Any] = field(default_factory=dict)
    decision: dict[str, Any] = field(default_factory=dict)  # what the allocator considered
    update: dict[str, Any] = field(default_factory=dict)  # what it learned from the round
    timing: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("teacher_cache", "difficulty_mix"):
            if data[key] is None:
                del data[key]
        signals, scores = data.pop("signals"), data.pop("scores")
        tail = {k: data.pop(k) for k in ("decision", "update", "timing")}
        splits = {**dict.fromkeys(signals, "dev"), **dict.fromkeys(scores, "eval")}
        return {**data, **signals, **scores, "splits": splits, **tail}


@dataclass
class Record:
    """A finished run: its config, spend, rounds, final scores and references, and where its time went."""

    config: dict[str, Any]
    seed: int
    version: str
    experiment: str
    allocator: str  # the allocator's label (its class's `name`)
    loss: str
    task: str
    budget: dict[str, Any]
    rounds: list[dict[str, Any]]  # `RoundEntry.to_json()` of every round
    final: dict[str, Any]  # the last round's eval scores and dev proxies, and their `splits`
    reference: dict[str, Any]  # teacher and student base
    identification: dict[str, Any] | None  # pilot runs and learned requirements (identify=learned)
    timing: dict[str, float]
    # the final student's task exact match on dev (what grid chooses on); with evaluation.dev_probe, `probe`:
    # every capability's dev exact match
    final_dev: dict[str, Any] | None
    fingerprint: str  # the config hash a relaunch compares
    lmeval: dict[str, Any] | None = None  # the final student re-scored through lm-eval
    # the teacher logit cache over the run: {"tokens", "bytes", "bytes_per_token", "examples_without"}
    teacher_cache: dict[str, Any] | None = None
    # how the model-written code its scoring ran was executed: "isolated (bubblewrap 0.8.0)" or "unsafe"
    # (evaluation.allow_unsafe_code on a machine without isolation); absent when no code ran
    code_execution: str | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("lmeval", "teacher_cache", "code_execution"):
            if data[key] is None:
                del data[key]
        check_record(data)
        return data


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
