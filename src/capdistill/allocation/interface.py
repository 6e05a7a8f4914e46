"""The allocator interface: each round, split the round's slice of the budget across capabilities."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

# What a decision may read of a finished round's record entry: the allocation, the spend and the
# dev-split signals. Eval scores (the entry's `probe`, `task_utility`) only report, so they never get here.
DECISION_KEYS = ("round", "allocation", "spent_by_capability", "probe_loglik", "task_loglik")


def decision_view(entry: dict[str, Any]) -> dict[str, Any]:
    """The part of a round's record entry that allocators may read (`DECISION_KEYS`; a round that
    measured no signal has none)."""
    return {k: entry[k] for k in DECISION_KEYS if k in entry}


@dataclass
class RoundContext:
    """What an allocator may look at before round `round` (0-based) of `rounds`: dev signals only."""

    round: int
    rounds: int
    capabilities: list[str]
    requirements: dict[str, float]  # the task's requirement vector over capabilities (sums to 1)
    # the student's current log-likelihood proxies on dev, as far as `Allocator.signals` asks for them
    probe_loglik: dict[str, float]  # per capability
    task_loglik: float | None  # the task's
    total_tokens: int
    spent_tokens: int
    history: list[dict[str, Any]] = field(default_factory=list)  # decision views of the completed rounds

    @property
    def budget_left(self) -> int:
        return self.total_tokens - self.spent_tokens


@dataclass
class Allocation:
    """What `allocate` returns when it has more to say than the split: the split, and what the allocator
    considered in choosing it (recorded as the round's `decision`)."""

    split: dict[str, float]
    decision: dict[str, Any] = field(default_factory=dict)


class Allocator(ABC):
    """Chooses capability weights for each round; learns from each round's outcome if it wants to.

    Weights are non-negative and need not sum to 1 (the engine normalises them). `update`
    receives the decision view of the round's record entry (allocation, spend and the dev
    signals after the round), so a resumed run can replay it to rebuild the allocator's state.
    """

    name: ClassVar[str] = ""  # the record's label (a class without one is labelled by its class name)
    pilot_fraction: float = 0.0  # each pilot run's share of the budget (see `pilot_splits`)
    static: ClassVar[bool] = False  # the same split every round, whatever it observes (checkable from the config)

    def __init__(self, capabilities: list[str], seed: int = 0) -> None:
        self.capabilities, self.seed = list(capabilities), seed

    @abstractmethod
    def allocate(self, context: RoundContext) -> dict[str, float] | Allocation:
        """Weights per capability for this round's slice, or an `Allocation` with what was considered."""

    def decide(self, context: RoundContext) -> Allocation:
        """The engine's call: `allocate`'s result as an `Allocation` (a plain split records no decision)."""
        result = self.allocate(context)
        return result if isinstance(result, Allocation) else Allocation(dict(result))

    def signals(self, requirements: dict[str, float]) -> list[str]:
        """What `allocate` and `update` read of the dev proxy every round: capability names, and
        `TASK` for the task's. Every signal is measured at evaluation checkpoints, these between
        them. Static allocators read none."""
        return []

    def pilot_splits(self) -> list[dict[str, float]]:
        """Splits to try in short pilot runs from the student base before round 0, to learn the
        task's requirements (none for allocators that take the task card's)."""
        return []

    def identify(self, interventions: list[Any]) -> dict[str, float]:
        """Learn the requirement vector from the pilot runs of `pilot_splits` (`Intervention`s, dev signals).

        Called only when `pilot_splits` returned some, so only those allocators override it."""
        raise NotImplementedError(f"allocator {self.name!r} runs no pilots")

    def update(self, context: RoundContext, allocation: dict[str, float], outcome: dict[str, Any]) -> dict[str, Any]:
        """Learn from a finished round; returns what it measured (recorded per round). Static allocators learn nothing."""
        return {}
