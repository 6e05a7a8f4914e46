"""A world's sources: its parameters, capabilities, tasks and held-out example sets (built from the
config by `capdistill.components.world_sources`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any

from capdistill.capabilities import CAPABILITIES, COMPOSITES, Example, Source, WorldParams, build_capabilities
from capdistill.capabilities.base import TASK
from capdistill.capabilities.paper import PaperSuite
from capdistill.capabilities.real import real_sources
from capdistill.errors import CapdistillError

# The world build's own score sets (build.json, `capdistill build-world`): the probe split at
# these sizes (or all of a smaller one), fixed so that a shipped build reproduces its recorded scores.
BUILD_PROBE_SIZE, BUILD_TASK_SIZE = 64, 128

# A synthetic world's held-out sets, kept per process by what draws them (world parameters, source, role,
# size, seed, levels): a sweep's worker runs job after job on one world and its fixed eval seed, and a
# population smaller than the size asked for costs `EXHAUSTED_AFTER` fruitless draws (seconds) each time.
_HELD_OUT: dict[tuple[Any, ...], tuple[Example, ...]] = {}
_HELD_OUT_KEPT = 256


def nested_tuples(value: object) -> object:
    """Nested lists from YAML as the nested tuples WorldParams holds."""
    return tuple(nested_tuples(v) for v in value) if isinstance(value, list) else value


@dataclass
class WorldSources:
    """Capabilities (probed) and composite tasks (evaluated) of one world config.

    The synthetic world has generator `params`; a benchmark world (`world=paper`) has
    pool-backed capabilities and the lm-eval `suite` that scores them. A run's held-out
    sets have sizes `probe_size` (each capability's eval set), `eval_size` (the task's) and
    `dev_size` (every dev set).
    """

    params: WorldParams | None
    capabilities: dict[str, Source]
    composites: dict[str, Source]
    probe_size: int
    eval_size: int
    suite: PaperSuite | None = None
    requirements: dict[str, float] = field(default_factory=dict)  # the task card's (for WEIGHTED utility)
    spec_extra: dict[str, Any] | None = None  # how a pool world is rebuilt (see `spec`)
    dev_size: int = 0

    @classmethod
    def from_params(
        cls, params: WorldParams, names: Sequence[str] = CAPABILITIES, probe_size: int = 0, eval_size: int = 0
    ) -> WorldSources:
        """The world of `params` with capabilities `names` (default: all) and every composite task."""
        caps = build_capabilities(params, list(names))
        composites = {name: source(params) for name, source in COMPOSITES.items()}
        return cls(params, caps, composites, probe_size, eval_size)

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> WorldSources:
        """Rebuild a world from its `spec` (JSON), e.g. inside an lm-eval hook process."""
        if spec["world"] == "synthetic":
            params = WorldParams(**{k: nested_tuples(v) for k, v in spec["params"].items()})
            return cls.from_params(params)
        dev_size = spec.get("dev_size", min(spec["probe_size"], 32))  # specs exported before dev sets had a size
        caps = real_sources(spec["names"], spec["probe_size"], spec["eval_size"], spec["train_size"], dev_size)
        cap = spec.get("max_gen_toks")  # a cap on every probe and eval generation (CPU-sized checks)
        for source in caps.values() if cap else ():
            source.max_new_tokens = min(source.max_new_tokens or cap, cap)
        world = cls(None, caps, {}, spec["probe_size"], spec["eval_size"], dev_size=dev_size)
        world.spec_extra = spec
        return world

    @property
    def spec(self) -> dict[str, Any]:
        """What rebuilds this world's sources and checkers (paper suites are scored by lm-eval itself)."""
        if self.params is not None:
            return {"world": "synthetic", "params": asdict(self.params)}
        if self.spec_extra is None:
            raise CapdistillError("this world's sets are lm-eval tasks already; there is nothing to export")
        return self.spec_extra

    @property
    def difficulties(self) -> tuple[int, ...]:
        return tuple(range(1, self.params.levels + 1)) if self.params else (1,)

    @property
    def runs_code(self) -> bool:
        """Whether scoring this world executes model-written code (see `capabilities.real.sandbox`)."""
        code = any(s.runs_code for s in self.all_sources.values())
        return code or (self.suite is not None and self.suite.runs_code)

    @property
    def all_sources(self) -> dict[str, Source]:
        return {**self.capabilities, **self.composites}

    def examples(self, name: str, split: str, n: int, seed: int = 0, at_most: bool = False) -> list[Example]:
        return self.all_sources[name].sample(split, n, seed, self.difficulties, at_most=at_most)

    def dev_sets(self, size: int) -> dict[str, list[Example]]:
        """Dev split of every capability and task (a world build's stopping rule reads it)."""
        return {n: self.examples(n, "dev", size) for n in self.all_sources}

    def held_out_sets(self, role: str, task_source: str, seed: int) -> dict[str, list[Example]]:
        """A run's sets of one role (`capabilities.base.ROLES`): every capability's, and under `TASK`
        a composite task's own. Eval sets have `probe_size` items per capability and `eval_size`
        for the task, dev sets `dev_size` each; a population smaller than that is taken whole."""
        capability_size = self.dev_size if role == "dev" else self.probe_size
        task_size = self.dev_size if role == "dev" else self.eval_size
        sets = {n: self.held_out(n, role, capability_size, seed) for n in self.capabilities}
        if task_source in self.composites:
            sets[TASK] = self.held_out(task_source, role, task_size, seed)
        return sets

    def held_out(self, name: str, role: str, n: int, seed: int) -> list[Example]:
        if self.params is None:  # a pool world's sets are slices of its pools already
            return self.all_sources[name].held_out(role, n, seed, self.difficulties)
        key = (self.params, name, role, n, seed, self.difficulties)
        if key not in _HELD_OUT:
            if len(_HELD_OUT) >= _HELD_OUT_KEPT:
                _HELD_OUT.clear()
            _HELD_OUT[key] = tuple(self.all_sources[name].held_out(role, n, seed, self.difficulties))
        return list(_HELD_OUT[key])

    def check_pools(self, dev_size: int) -> None:
        """Draw the world build's fixed sets now, so an exhausted prompt pool fails before any model is built."""
        for sets in (self.build_probes, self.build_task_sets, self.dev_sets(dev_size)):
            if not all(sets.values()):
                raise AssertionError("Source.sample returned an empty set")

    @cached_property
    def build_probes(self) -> dict[str, list[Example]]:
        """The world build's probe set of every capability (its recorded scores and teacher responses)."""
        return {n: self.examples(n, "probe", BUILD_PROBE_SIZE, at_most=True) for n in self.capabilities}

    @cached_property
    def build_task_sets(self) -> dict[str, list[Example]]:
        """The world build's evaluation set of every composite task."""
        return {n: self.examples(n, "eval", BUILD_TASK_SIZE, at_most=True) for n in self.composites}
