"""Dataclass schemas of the config groups, registered in Hydra's ConfigStore: the bottom layer.

Composition merges each group's YAML into these types, so an unknown key or a value of the
wrong type fails before anything runs, naming the key. Each dataclass checks its own ranges
in `__post_init__`, which runs when the edge converts the config (`capdistill.components`).
Components chosen by `_target_` (allocator, loss, trainer, logger) have no schema here: their
class signature is their schema, and instantiating them checks their options.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from capdistill.config.units import parse_tokens
from capdistill.errors import CapdistillError


class ConfigError(CapdistillError):
    """A bad configuration value, reported as one line before any compute."""


def positive(where: str, **values: float | None) -> None:
    """Raise ConfigError naming the first of `values` that is not positive (`where`: its config path)."""
    for key, value in values.items():
        if value is None or value <= 0:
            raise ConfigError(f"{where}{key} must be positive, got {value!r}")


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
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ConfigError(
                f"distill.generation: need temperature >= 0 and 0 < top_p <= 1, got {self.temperature}, {self.top_p}"
            )


class TokenizerKind(str, Enum):
    word = "word"
    bpe = "bpe"


class World(str, Enum):
    paper = "paper"  # the paper's benchmarks through lm-eval (capdistill.capabilities.paper)
    offline_real = "offline_real"  # real data shipped in packages (capdistill.capabilities.real)
    synthetic = "synthetic"


class ModelKind(str, Enum):
    synthetic = "synthetic"  # built and trained by the project from `arch` (the synthetic world)
    hf = "hf"  # any Hugging Face causal LM, by hub name or local path


class Dtype(str, Enum):
    auto = "auto"
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


@dataclass
class ArchConf:
    hidden_size: int = 128
    intermediate_size: int = 384
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int | None = None
    max_positions: int = 256
    tie_embeddings: bool = True

    def __post_init__(self) -> None:
        positive("arch.", hidden_size=self.hidden_size, num_layers=self.num_layers, num_heads=self.num_heads)
        positive("arch.", intermediate_size=self.intermediate_size)
        if self.hidden_size % self.num_heads:
            raise ConfigError(
                f"arch.hidden_size ({self.hidden_size}) must be divisible by num_heads ({self.num_heads})"
            )


@dataclass
class WorldTrainConf:
    """How a world model is trained from scratch (teacher) or briefly pre-trained (student base)."""

    max_steps: int = 1000
    batch_size: int = 64
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    # Stop once every capability and task reaches `target` % on the dev split (null: run max_steps).
    target: float | None = None
    eval_every: int = 200
    dev_size: int = 32
    max_minutes: float | None = None
    # Relative sampling weight per capability/task (missing ones weigh 1).
    mix: dict[str, float] = field(default_factory=dict)
    # A first stage of `curriculum_steps` steps drawn by `curriculum_mix` (missing ones weigh 0)
    # instead of `mix`: e.g. retrieval alone, so the lookup circuit forms before the mixture.
    curriculum_steps: int = 0
    curriculum_mix: dict[str, float] = field(default_factory=dict)
    curriculum_lr: float | None = None  # the stage's (constant, after warmup) learning rate; null: `lr`
    # Examples are length-sorted `bucket` batches at a time: less padding, but each batch
    # holds fewer task families (1: fully mixed batches, which learn fastest per second).
    bucket: int = 1

    def __post_init__(self) -> None:
        positive("train.", batch_size=self.batch_size, eval_every=self.eval_every, dev_size=self.dev_size)
        positive("train.", bucket=self.bucket, lr=self.lr)
        if self.max_steps < 0:
            raise ConfigError(f"train.max_steps must be >= 0, got {self.max_steps}")
        if self.curriculum_steps and not any(w > 0 for w in self.curriculum_mix.values()):
            raise ConfigError("train.curriculum_steps needs a curriculum_mix with a positive weight")
        if self.target is not None and not 0 < self.target <= 100:
            raise ConfigError(f"train.target must be in (0, 100], got {self.target}")


@dataclass
class InitConf:
    """How an HF student starts, other than as the checkpoint at `path`."""

    # keep these decoder layers of the checkpoint, in order (layer-dropping initialisation)
    layers: list[int] | None = None
    # width pruning: keep this many residual channels / MLP neurons per layer (largest weight norms)
    hidden_size: int | None = None
    intermediate_size: int | None = None
    # random weights shaped by `arch` (a Llama), with the tokenizer at `path`
    scratch: bool = False


@dataclass
class ModelConf:
    """A teacher or student: a synthetic-world model built from `arch`, or an HF model from `path`.

    `tokenizer`, `vocab_size`, `arch` and `train` describe the synthetic build; `path`,
    `dtype`, `attn_implementation` and `chat_template` describe loading an HF model.
    """

    kind: ModelKind = ModelKind.synthetic
    name: str = MISSING
    path: str | None = None  # hub name (from the local HF cache) or a local directory
    dtype: Dtype = Dtype.float32
    attn_implementation: str | None = None  # e.g. sdpa, eager, flash_attention_2
    chat_template: bool = False  # wrap prompts in the tokenizer's chat template
    tokenizer: TokenizerKind = TokenizerKind.word
    vocab_size: int = 1024
    arch: ArchConf = field(default_factory=ArchConf)
    train: WorldTrainConf = field(default_factory=WorldTrainConf)
    init: InitConf = field(default_factory=InitConf)
    seed: int = 0

    def __post_init__(self) -> None:
        positive("", vocab_size=self.vocab_size)


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
    max_gen_toks: int | None = None  # cap generation tasks' length in per-round probes
    # world=offline_real: train prompts per capability drawn from generators (pools of fixed data keep their size)
    train_size: int = 2000

    def __post_init__(self) -> None:
        if not self.names:
            raise ConfigError("capabilities.names is empty")
        if len(set(self.names)) != len(self.names):
            raise ConfigError("capabilities.names lists a capability twice")
        positive("capabilities.", probe_size=self.probe_size, eval_size=self.eval_size, dev_size=self.dev_size)
        positive("capabilities.", probe_batch_size=self.probe_batch_size, train_size=self.train_size)


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

    def __post_init__(self) -> None:
        parse_tokens(self.total_tokens)
        positive("budget.", rounds=self.rounds)


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

    def __post_init__(self) -> None:
        positive("distill.", batch_size=self.batch_size, epochs=self.epochs, log_every=self.log_every)


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
    # which eval items a run draws (the run's seed by default, so paired runs share them)
    seed: int = "${seed}"  # type: ignore[assignment]

    def __post_init__(self) -> None:
        positive("evaluation.", batch_size=self.batch_size)
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


@dataclass
class RootConf:
    teacher: ModelConf = MISSING
    student: ModelConf = MISSING
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


def register_configs() -> None:
    """Register the root schema; `conf/train.yaml` lists it first in its defaults."""
    ConfigStore.instance().store(name="train_schema", node=RootConf)


def check_writable(path: str | Path, what: str) -> None:
    """Fail early, in one line, if `path` cannot be created or written."""
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path):
            pass
    except OSError as err:
        raise ConfigError(f"{what} {path} is not writable ({err.strerror or err})") from None


def typed_settings(cfg: DictConfig) -> RootConf:
    """The composed config as typed objects, every `__post_init__` check run: the one conversion at the edge.

    Groups chosen by `_target_` stay plain containers (their classes check them when built).
    """
    for role in ("teacher", "student"):  # a model's own checks name their field within the role
        try:
            OmegaConf.to_object(cfg[role])
        except ConfigError as err:
            raise ConfigError(f"{role}.{err}") from None
    return OmegaConf.to_object(cfg)  # type: ignore[return-value]
