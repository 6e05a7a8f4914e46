"""Dataclass schemas of the config groups, registered in Hydra's ConfigStore: the bottom layer.

Composition merges each group's YAML into these types, so an unknown key or a value of the
wrong type fails before anything runs, naming the key. Each dataclass checks its own ranges
in `__post_init__`, which runs when the edge converts the config (`capdistill.components`).
Components chosen by `_target_` (allocator, loss, trainer, logger) have no schema here: their
class signature is their schema, and instantiating them checks their options. The teacher's and
student's classes are dataclasses, so they are schemas too (`capdistill.config.model_specs`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from capdistill.config.checks import ConfigError, not_empty, positive
from capdistill.config.model_specs import MODEL_KINDS, model_spec
from capdistill.config.units import parse_tokens


class Scope(str, Enum):
    """What one optimizer and its learning-rate schedule span."""

    run = "run"  # the whole run: moments carry over between rounds, the schedule follows budget progress
    round = "round"  # each round afresh: new moments, warmup and schedule over the round's steps


class Schedule(str, Enum):
    constant = "constant"  # after warmup (the released ReAD code's: no schedule at all)
    cosine = "cosine"  # to `min_lr_ratio` of the peak at the end of the scope


class Overflow(str, Enum):
    """A response that would overflow its capability's slice: drop it (the slice ends short) or truncate it."""

    drop = "drop"
    truncate = "truncate"


@dataclass
class Generation:
    """How the teacher writes responses (temperature 0: greedy); the `distill.generation` group."""

    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 64
    batch_size: int = 128

    def __post_init__(self) -> None:
        positive("distill.generation.", max_new_tokens=self.max_new_tokens, batch_size=self.batch_size)
        if not 0 <= self.temperature < math.inf or not 0 < self.top_p <= 1:  # NaN fails too
            raise ConfigError(
                "distill.generation: need a finite temperature >= 0 and 0 < top_p <= 1, "
                f"got {self.temperature}, {self.top_p}"
            )


@dataclass
class CurriculumStage:
    """One stage of a difficulty curriculum: its mix holds while budget progress is below `until`."""

    until: float = MISSING  # fraction of the budget spent before a round, in (0, 1]
    mix: list[float] = MISSING  # share of the train prompts per difficulty level, easiest first


@dataclass
class CurriculumConf:
    """The difficulty mix of the train prompts by budget progress (the `curriculum` group). No stages: every
    prompt's level is drawn uniformly from the world's levels, as before curricula existed."""

    stages: list[CurriculumStage] = field(default_factory=list)

    def __post_init__(self) -> None:
        untils = [s.until for s in self.stages]
        if untils and (untils != sorted(set(untils)) or untils[0] <= 0 or untils[-1] != 1):
            raise ConfigError(
                f"distill.curriculum.stages: `until` must rise strictly through (0, 1] and end at 1, got {untils}"
            )
        levels = {len(s.mix) for s in self.stages}
        if len(levels) > 1:
            raise ConfigError(f"distill.curriculum.stages: every mix needs as many levels, got {sorted(levels)}")
        for stage in self.stages:
            if any(w < 0 for w in stage.mix) or sum(stage.mix) <= 0:
                raise ConfigError(
                    f"distill.curriculum: the mix {list(stage.mix)} must be non-negative with a positive sum"
                )

    @property
    def levels(self) -> int:
        """How many difficulty levels the mixes weigh (0: no curriculum)."""
        return len(self.stages[0].mix) if self.stages else 0

    def mix(self, progress: float) -> tuple[float, ...] | None:
        """The mix of the round that starts at `progress` (the fraction of the budget spent); None: no curriculum."""
        for stage in self.stages:
            if progress < stage.until:
                return tuple(stage.mix)
        return tuple(self.stages[-1].mix) if self.stages else None


class World(str, Enum):
    paper = "paper"  # the paper's benchmarks through lm-eval (capdistill.capabilities.paper)
    offline_real = "offline_real"  # real data shipped in packages (capdistill.capabilities.real)
    synthetic = "synthetic"


@dataclass
class CapabilitiesConf:
    world: World = World.synthetic
    names: list[str] = MISSING
    # world=synthetic: the generators' parameters, checked by capabilities.synthetic.WorldParams (its schema)
    params: dict[str, Any] = field(default_factory=dict)
    # held-out sets of a run, drawn per seed (the same for every allocator): eval reports, dev decides
    probe_size: int = 1200  # eval items per capability (exact match)
    eval_size: int = 4800  # eval items of the task (exact match)
    dev_size: int = 256  # dev items per capability and task (the log-likelihood proxy)
    probe_batch_size: int = 256
    # world=paper: capability -> lm-eval task/group/tag names, and how they are run
    benchmarks: dict[str, list[str]] = field(default_factory=dict)
    metrics: dict[str, str] = field(default_factory=dict)  # task -> metric key as lm-eval reports it
    data_files: dict[str, Any] = field(default_factory=dict)  # task -> {split: local file}
    include_path: list[str] = field(default_factory=list)  # extra lm-eval task directories
    # world=paper: cap generation tasks' length in per-round probes; world=offline_real: cap every probe and eval
    # generation (a CPU-sized check: scores under a cap do not compare with uncapped ones)
    max_gen_toks: int | None = None
    # world=offline_real: train prompts per capability drawn from generators (pools of fixed data keep their size)
    train_size: int = 2000

    def __post_init__(self) -> None:
        if not self.names:
            raise ConfigError("capabilities.names is empty")
        if len(set(self.names)) != len(self.names):
            raise ConfigError("capabilities.names lists a capability twice")
        positive("capabilities.", probe_size=self.probe_size, eval_size=self.eval_size, dev_size=self.dev_size)
        positive("capabilities.", probe_batch_size=self.probe_batch_size, train_size=self.train_size)
        if self.max_gen_toks is not None:
            positive("capabilities.", max_gen_toks=self.max_gen_toks)


@dataclass
class TaskConf:
    name: str = MISSING
    source: str = MISSING
    requirements: dict[str, float] = MISSING

    def __post_init__(self) -> None:
        weights = list(self.requirements.values())
        if any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ConfigError(f"task.requirements of {self.name} must be non-negative and sum to a positive number")


@dataclass
class BudgetConf:
    total_tokens: Any = "50k"  # int or '50k' / '2M'
    rounds: int = 20  # decision rounds (the paper: T = 20)
    # a general replay slice: this fraction of every round's tokens spread evenly over all capabilities,
    # whatever the allocator decides (continual learning's guard against forgetting, counted by the budget)
    replay: float = 0.0

    def __post_init__(self) -> None:
        parse_tokens(self.total_tokens)
        positive("budget.", rounds=self.rounds)
        if not 0.0 <= self.replay < 1.0:  # NaN fails too
            raise ConfigError(f"budget.replay must be in [0, 1), got {self.replay!r}")


@dataclass
class DistillConf:
    """Student training per round, and how teacher supervision is produced."""

    # Chosen on the dev split (task exact match and dev proxy, uniform and task_static, 12k-192k
    # tokens, 2 seeds): lr 1e-3 and 3e-3 lose the task's format (uniform's dev exact match at 12k
    # 19.3 and 0.6, base 22.7), lr 1e-4 x batch 8 ties 3e-4 x 32, cosine beats constant; the curves rise with
    # diminishing returns (uniform's dev proxy -0.307, -0.291, -0.271 at 12k, 48k, 192k).
    lr: float = 3e-4
    weight_decay: float = 0.01
    warmup_steps: int = 5
    min_lr_ratio: float = 0.1  # cosine's floor, as a fraction of lr
    # run: one AdamW and one schedule for the whole run, the schedule following budget progress
    # (the released ReAD code's regime); round: a fresh AdamW, warmup and schedule every round
    optimizer_scope: Scope = Scope.run
    schedule: Schedule = Schedule.cosine  # cosine to min_lr_ratio at the end of the scope, or constant
    batch_size: int = 32
    epochs: int = 1  # passes over each round's supervision (training tokens count again, budget does not)
    grad_clip: float = 1.0
    # a response that would overflow its capability's slice: drop it (slice ends short) or truncate it
    overflow: Overflow = Overflow.drop
    generation: Generation = field(default_factory=Generation)
    log_every: int = 10
    # pack each batch's examples into rows of up to `pack_length` tokens with no padding between them:
    # positions restart at every example and attention stays within it (the model is checked to honour
    # that when the run starts); the batches hold the same examples as unpacked ones
    packing: bool = False
    pack_length: int = 4096
    # the difficulty mix of the train prompts by budget progress (the `curriculum` group; none: uniform over levels)
    curriculum: CurriculumConf = field(default_factory=CurriculumConf)

    def __post_init__(self) -> None:
        positive(
            "distill.",
            batch_size=self.batch_size,
            epochs=self.epochs,
            log_every=self.log_every,
            pack_length=self.pack_length,
        )
        if not 0 <= self.grad_clip < math.inf:  # a negative value would silently not clip, NaN would poison every step
            raise ConfigError(f"distill.grad_clip must be a finite number >= 0 (0: no clipping), got {self.grad_clip}")
        most = self.generation.max_new_tokens
        if self.packing and self.pack_length <= most:
            raise ConfigError(
                f"a packed row of distill.pack_length={self.pack_length} tokens cannot hold a prompt and a response "
                f"of up to distill.generation.max_new_tokens={most} (such examples get a row of their own): "
                f"raise distill.pack_length above {most}, or set distill.packing=false"
            )


@dataclass
class EvaluationConf:
    """The run's final evaluation, besides the per-round probes."""

    # Re-score the final student through lm-eval (HFLM on the exported probe and task sets);
    # the record's `lmeval` key. It equals `final` by construction of the exported checkers.
    lmeval: bool = True
    batch_size: int = 16
    limit: int | None = None  # world=paper: items per benchmark in the final evaluation (null: all)
    # fractions of the rounds after which the eval sets are also scored (the last round always is)
    checkpoints: list[float] = field(default_factory=lambda: [0.5])
    # also score every capability's dev set by exact match, the final student's and the student base's
    # (`final_dev.probe`, `reference.student_base.dev_probe`): the paper's transfer statistics in its own
    # units on the split choices may read (the transfer sweeps)
    dev_probe: bool = False
    # run model-written code (the real tier's `code` capability, HumanEval) unisolated where bubblewrap cannot
    # isolate it: lm-eval's `confirm_run_unsafe_code`; where isolation works it is used whatever this says
    allow_unsafe_code: bool = False
    # which eval items a run draws (the run's seed by default, so paired runs share them)
    seed: int = "${seed}"  # type: ignore[assignment]

    def __post_init__(self) -> None:
        positive("evaluation.", batch_size=self.batch_size)
        if self.limit is not None:
            positive("evaluation.", limit=self.limit)
        bad = [f for f in self.checkpoints if not 0 < f <= 1]
        if bad:
            raise ConfigError(f"evaluation.checkpoints are fractions of the run in (0, 1], got {bad[0]}")


@dataclass
class ReportConf:
    """What an experiment reports: the figure `capdistill plot` draws from its table (`figure:` in the
    experiment config; the one registry that `experiments/run`, `collect` and `plot` read), and the
    experiments whose sweeps fill that table (default: this one)."""

    figure: str | None = None
    sweeps: list[str] = field(default_factory=list)


@dataclass
class PathsConf:
    root_dir: str = MISSING
    output_dir: str = MISSING
    cache_dir: str = MISSING
    assets_dir: str = MISSING

    def __post_init__(self) -> None:
        paths = {"root_dir": self.root_dir, "output_dir": self.output_dir, "cache_dir": self.cache_dir}
        not_empty("paths.", **paths, assets_dir=self.assets_dir)


MAX_SEED = 4_294_000  # seed * 1000 + round index stays below 2**32 for any run of < 967,000 rounds


@dataclass
class RootConf:
    # chosen by `_target_`: a model option's YAML extends its class's schema (capdistill.config.model_specs)
    teacher: Any = MISSING
    student: Any = MISSING
    capabilities: CapabilitiesConf = MISSING
    task: TaskConf = MISSING
    budget: BudgetConf = MISSING
    # chosen by `_target_` and built by hydra.utils.instantiate: the class signature is the schema
    allocator: Any = MISSING
    loss: Any = MISSING
    trainer: Any = MISSING
    logger: Any = None
    paths: PathsConf = MISSING
    distill: DistillConf = field(default_factory=DistillConf)
    evaluation: EvaluationConf = field(default_factory=EvaluationConf)
    report: ReportConf = field(default_factory=ReportConf)
    seed: int = 0
    experiment_name: str = "default"
    # Rebuild world models even when a cached build exists.
    rebuild: bool = False

    def __post_init__(self) -> None:
        not_empty("", experiment_name=self.experiment_name)  # it labels the record and names its table's rows
        if not 0 <= self.seed <= MAX_SEED:
            raise ConfigError(
                f"seed must be in [0, {MAX_SEED}] (each round seeds numpy with seed * 1000 + round, "
                f"which must fit in 32 bits), got {self.seed}"
            )


def register_configs() -> None:
    """Register the root schema (`conf/train.yaml` lists it first in its defaults) and the model classes'
    schemas that the teacher and student options extend (`/schema/synthetic_model`, `/schema/hf_model`)."""
    store = ConfigStore.instance()
    store.store(name="train_schema", node=RootConf)
    for kind, cls in MODEL_KINDS.items():
        store.store(group="schema", name=f"{kind}_model", node=cls)


def typed_settings(cfg: DictConfig) -> RootConf:
    """The composed config as typed objects, every `__post_init__` check run: the one conversion at the edge.

    The teacher and student become their model classes; groups chosen by other `_target_`s stay plain
    containers (their classes check them when built).
    """
    specs = {role: model_spec(cfg[role], role) for role in ("teacher", "student")}
    settings: RootConf = OmegaConf.to_object(cfg)  # type: ignore[assignment]
    settings.teacher, settings.student = specs["teacher"], specs["student"]
    return settings
