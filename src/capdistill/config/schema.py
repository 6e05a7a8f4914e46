"""Dataclass schemas for every config group, registered in Hydra's ConfigStore.

Composition merges each group's YAML into these types, so an unknown key or a value of
the wrong type fails before anything runs, naming the key; `validate` adds the checks a
type cannot express (ranges, names that must exist).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from capdistill.allocation import build_allocator
from capdistill.capabilities import CAPABILITIES, COMPOSITES, WEIGHTED
from capdistill.capabilities.lexicon import ENTITIES, KEYS, PEOPLE, TOOLS
from capdistill.capabilities.real import REAL_CAPABILITIES
from capdistill.config.units import parse_tokens
from capdistill.errors import CapdistillError
from capdistill.losses import build_loss
from capdistill.models.hf import checkpoint_shape, resolve_path
from capdistill.supervision.collect import Generation, Overflow
from capdistill.training.optim import OptimizerSettings, Schedule, Scope


class ConfigError(CapdistillError):
    """A bad configuration value, reported as one line before any compute."""


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


@dataclass
class WorldParamsConf:
    seed: int = 0
    max_value: int = 12
    num_entities: int = 30
    list_lengths: list[list[int]] = field(default_factory=lambda: [[2, 2], [2, 3], [3, 4]])
    order_items: list[int] = field(default_factory=lambda: [2, 3, 3])
    math_steps: list[int] = field(default_factory=lambda: [1, 2, 2])
    code_statements: list[int] = field(default_factory=lambda: [1, 2, 2])
    tools_listed: list[int] = field(default_factory=lambda: [1, 2, 3])
    context_pairs: list[int] = field(default_factory=lambda: [2, 3, 4])


@dataclass
class CapabilitiesConf:
    world: World = World.synthetic
    names: list[str] = field(default_factory=lambda: list(CAPABILITIES))
    params: WorldParamsConf = field(default_factory=WorldParamsConf)
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


@dataclass
class TaskConf:
    name: str = MISSING
    source: str = MISSING
    requirements: dict[str, float] = MISSING


@dataclass
class BudgetConf:
    total_tokens: Any = "50k"  # int or '50k' / '2M'
    rounds: int = 20  # decision rounds (the paper: T = 20)


@dataclass
class AllocatorConf:
    """An allocator (capdistill.allocation.build_allocator); fields it does not take stay null."""

    name: str = "uniform"
    # {capability: weight} for `fixed`; typed Any so that a command-line dict replaces null
    # (OmegaConf cannot merge into a null typed dict)
    weights: Any = None
    capability: str | None = None  # single
    alpha: float | None = None  # random: Dirichlet concentration
    # read / greedy (see conf/allocator/read.yaml)
    top_k: int | None = None
    kappa: float | None = None
    kappa_decay: float | None = None
    kappa_every: float | None = None
    beta: float | None = None
    lam: float | None = None
    ensemble: int | None = None
    hidden: int | None = None
    fit_steps: int | None = None
    fit_lr: float | None = None
    warmup: int | None = None
    max_candidates: int | None = None
    step: float | None = None
    tilt: float | None = None
    one_hots: bool | None = None
    context: str | None = None  # compact | paper
    calibration: str | None = None  # affine | affine_sigma | off
    proxy_units: str | None = None  # nats | relative (the reward's units for the dev proxy's changes)
    trust_radius: float | None = None  # read_trust: total-variation distance from r
    trust_z: float | None = None
    use_requirements: bool | None = None
    adapt: bool | None = None
    identify: str | None = None  # card | learned (requirements from pilot runs)
    pilots: int | None = None
    pilot_fraction: float | None = None
    entropy_weight: float | None = None


@dataclass
class LossConf:
    """A KD objective (capdistill.losses.build_loss); fields a loss does not take stay null."""

    name: str = "sft"
    temperature: float = 1.0
    ce_weight: float | None = None
    vocab_size: int | None = None
    chunk_size: int | None = None
    beta: float | None = None
    k: int | None = None
    num_samples: int | None = None
    top_k: int | None = None
    std_normalize: bool | None = None
    token_weight: float | None = None
    kl_weight: float | None = None
    seq_weight: float | None = None
    sinkhorn_epsilon: float | None = None
    sinkhorn_iters: int | None = None


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


@dataclass
class TrainerConf:
    """Lightning Trainer settings for the student's training (pytorch_lightning.Trainer)."""

    accelerator: str = "cpu"
    devices: Any = 1
    num_nodes: int = 1
    precision: str = "32-true"
    strategy: str = "auto"


class LoggerName(str, Enum):
    csv = "csv"
    wandb = "wandb"
    none = "none"


@dataclass
class LoggerConf:
    name: LoggerName = LoggerName.csv
    project: str = "capdistill"
    entity: str | None = None
    group: str | None = None  # W&B group (default: experiment_name)
    offline: bool = True


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
    allocator: AllocatorConf = MISSING
    loss: LossConf = MISSING
    trainer: TrainerConf = MISSING
    logger: LoggerConf = MISSING
    paths: PathsConf = MISSING
    distill: DistillConf = field(default_factory=DistillConf)
    evaluation: EvaluationConf = field(default_factory=EvaluationConf)
    seed: int = 0
    experiment_name: str = "default"
    # Rebuild world models even when a cached build exists.
    rebuild: bool = False


def register_configs() -> None:
    """Register the root schema; `conf/train.yaml` lists it first in its defaults."""
    ConfigStore.instance().store(name="train_schema", node=RootConf)


def _positive(cfg: DictConfig, *keys: str) -> None:
    for key in keys:
        node: Any = cfg
        for part in key.split("."):
            node = node[part]
        if node is None or node <= 0:
            raise ConfigError(f"{key} must be positive, got {node!r}")


def check_writable(path: str | Path, what: str) -> None:
    """Fail early, in one line, if `path` cannot be created or written."""
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path):
            pass
    except OSError as err:
        raise ConfigError(f"{what} {path} is not writable ({err.strerror or err})") from None


def validate(cfg: DictConfig) -> None:
    """Checks a type cannot express; raises ConfigError naming the key."""
    names = list(cfg.capabilities.names)
    if not names:
        raise ConfigError("capabilities.names is empty")
    if len(set(names)) != len(names):
        raise ConfigError("capabilities.names lists a capability twice")
    _positive(cfg, "capabilities.probe_size", "capabilities.eval_size", "capabilities.dev_size")
    _positive(cfg, "capabilities.probe_batch_size", "evaluation.batch_size")
    bad = [f for f in cfg.evaluation.checkpoints if not 0 < f <= 1]
    if bad:
        raise ConfigError(f"evaluation.checkpoints are fractions of the run in (0, 1], got {bad[0]}")
    if cfg.capabilities.world == World.synthetic:
        validate_synthetic_world(cfg, names)
    else:
        validate_benchmark_world(cfg, names)
    task = cfg.task
    if task.source not in names and task.source not in COMPOSITES and task.source != WEIGHTED:
        known = ", ".join(names + sorted(COMPOSITES) + [WEIGHTED])
        raise ConfigError(f"task.source: unknown source {task.source!r} for task {task.name}; known: {known}")
    bad = [c for c in task.requirements if c not in names]
    if bad:
        raise ConfigError(f"task.requirements: unknown capability {bad[0]!r} in task {task.name}")
    weights = list(task.requirements.values())
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ConfigError(f"task.requirements of {task.name} must be non-negative and sum to a positive number")
    build_loss(**OmegaConf.to_container(cfg.loss))  # validates the loss's options without compute
    parse_tokens(cfg.budget.total_tokens)
    _positive(cfg, "budget.rounds")
    for role in ("teacher", "student"):
        model = cfg[role]
        _positive(
            cfg,
            f"{role}.vocab_size",
            f"{role}.train.batch_size",
            f"{role}.train.eval_every",
            f"{role}.train.dev_size",
            f"{role}.train.bucket",
        )
        _positive(
            cfg, f"{role}.train.lr", f"{role}.arch.hidden_size", f"{role}.arch.num_layers", f"{role}.arch.num_heads"
        )
        if model.train.max_steps < 0:
            raise ConfigError(f"{role}.train.max_steps must be >= 0, got {model.train.max_steps}")
        if model.arch.hidden_size % model.arch.num_heads:
            raise ConfigError(
                f"{role}.arch.hidden_size ({model.arch.hidden_size}) must be divisible by num_heads ({model.arch.num_heads})"
            )
        for key in ("mix", "curriculum_mix"):
            stray = [k for k in model.train[key] if k not in names and k not in COMPOSITES]
            if stray:
                raise ConfigError(f"{role}.train.{key}: unknown capability or task {stray[0]!r}")
        if model.train.curriculum_steps and not any(w > 0 for w in model.train.curriculum_mix.values()):
            raise ConfigError(f"{role}.train.curriculum_steps needs a curriculum_mix with a positive weight")
        if model.train.target is not None and not 0 < model.train.target <= 100:
            raise ConfigError(f"{role}.train.target must be in (0, 100], got {model.train.target}")
    validate_run(cfg, names)
    check_writable(cfg.paths.cache_dir, "paths.cache_dir")


def validate_synthetic_world(cfg: DictConfig, names: list[str]) -> None:
    """The synthetic world's capability names and generator parameters."""
    unknown = [n for n in names if n not in CAPABILITIES]
    if unknown:
        raise ConfigError(f"capabilities.names: unknown capability {unknown[0]!r}; known: {', '.join(CAPABILITIES)}")
    params = cfg.capabilities.params
    for key in ("list_lengths", "order_items", "math_steps", "code_statements", "tools_listed", "context_pairs"):
        if len(params[key]) == 0:
            raise ConfigError(f"capabilities.params.{key} needs one entry per difficulty level, got none")
    bounds = {  # per-level sizes the generators can honour
        "order_items": (2, len(PEOPLE)),
        "math_steps": (1, 10),
        "code_statements": (1, 10),
        "tools_listed": (1, len(TOOLS) - 1),
        "context_pairs": (1, len(KEYS)),
    }
    for key, (lo, hi) in bounds.items():
        bad = [v for v in params[key] if not lo <= v <= hi]
        if bad:
            raise ConfigError(f"capabilities.params.{key}: every level must be in [{lo}, {hi}], got {bad[0]}")
    if not 2 <= params.num_entities <= len(ENTITIES):
        raise ConfigError(
            f"capabilities.params.num_entities must be in [2, {len(ENTITIES)}], got {params.num_entities}"
        )
    for lo, hi in params.list_lengths:
        if not 1 <= lo <= hi:
            raise ConfigError(f"capabilities.params.list_lengths: need 1 <= lo <= hi, got [{lo}, {hi}]")
    if params.max_value < 2:
        raise ConfigError(f"capabilities.params.max_value must be >= 2, got {params.max_value}")


def validate_benchmark_world(cfg: DictConfig, names: list[str]) -> None:
    """world=paper or offline_real: known capabilities, local data files exist, the models are HF models."""
    caps = cfg.capabilities
    world = caps.world.value
    if caps.world == World.paper:
        missing = [n for n in names if not caps.benchmarks.get(n)]
        if missing:
            raise ConfigError(f"capabilities.benchmarks: capability {missing[0]!r} has no benchmark")
    else:
        unknown = [n for n in names if n not in REAL_CAPABILITIES]
        if unknown:
            raise ConfigError(
                f"capabilities.names: unknown capability {unknown[0]!r}; known: {', '.join(REAL_CAPABILITIES)}"
            )
        _positive(cfg, "capabilities.train_size")
    for task, files in caps.data_files.items():
        for split, path in files.items():
            if not Path(path).is_file():
                raise ConfigError(f"capabilities.data_files.{task}.{split}: no file {path}")
    for role in ("teacher", "student"):
        if cfg[role].kind != ModelKind.hf:
            raise ConfigError(
                f"capabilities={world} needs HF models: {role}={cfg[role].name} is a synthetic-world model"
            )


def check_init(mcfg: DictConfig, role: str) -> None:
    """An HF model's initialisation: kept layers and widths within the checkpoint's, or a scratch shape."""
    shape = checkpoint_shape(mcfg.path)
    layers, depth = mcfg.init.layers, None if shape is None else shape.get("num_hidden_layers", 0)
    if depth == 0 and not mcfg.init.scratch:
        raise ConfigError(f"{role}.path {mcfg.path} is a tokenizer only: set {role}.init.scratch=true")
    if layers is not None:
        if mcfg.init.scratch:
            raise ConfigError(f"{role}.init: layers and scratch exclude each other")
        if not layers or len(set(layers)) != len(layers):
            raise ConfigError(f"{role}.init.layers must be a non-empty list of distinct layer indices")
        bad = [i for i in layers if depth is not None and not 0 <= i < depth]
        if bad:
            raise ConfigError(
                f"{role}.init.layers: layer {bad[0]} is outside {mcfg.path}'s depth ({depth} layers, 0-{depth - 1})"
            )
    for key in ("hidden_size", "intermediate_size"):
        width = mcfg.init[key]
        if width is None:
            continue
        if mcfg.init.scratch:
            raise ConfigError(f"{role}.init: {key} and scratch exclude each other (a scratch shape is arch.{key})")
        full = (shape or {}).get(key)
        if width <= 0 or (full is not None and width > full):
            raise ConfigError(f"{role}.init.{key}={width} must be in 1..{full or 'the checkpoint width'} ({mcfg.path})")
        heads = (shape or {}).get("num_attention_heads")
        if key == "hidden_size" and heads and width % heads:
            raise ConfigError(f"{role}.init.hidden_size={width} must be a multiple of {mcfg.path}'s {heads} heads")
    if mcfg.init.scratch:
        _positive(mcfg, "arch.hidden_size", "arch.num_layers", "arch.num_heads", "arch.intermediate_size")
        if mcfg.arch.hidden_size % mcfg.arch.num_heads:
            raise ConfigError(f"{role}.arch.hidden_size must be divisible by {role}.arch.num_heads")


def optimizer_settings(cfg: DictConfig) -> OptimizerSettings:
    """The run's optimizer, from `distill`."""
    d = cfg.distill
    return OptimizerSettings(d.lr, d.weight_decay, d.warmup_steps, d.min_lr_ratio, d.schedule, d.optimizer_scope)


def validate_run(cfg: DictConfig, names: list[str]) -> None:
    """Checks of the distillation settings: allocator, models to load, trainer, supervision."""
    options = {k: v for k, v in OmegaConf.to_container(cfg.allocator).items() if k != "name"}
    build_allocator(cfg.allocator.name, names, cfg.seed, **options)  # validates weights without compute
    for role in ("teacher", "student"):
        if cfg[role].kind == ModelKind.hf:
            resolve_path(cfg[role].path, role)
            check_init(cfg[role], role)
    if "fsdp" in str(cfg.trainer.strategy) and cfg.trainer.accelerator == "cpu":
        raise ConfigError("trainer.strategy=fsdp needs GPUs: use trainer=fsdp on a GPU machine, or trainer=cpu")
    _positive(
        cfg,
        "distill.lr",
        "distill.batch_size",
        "distill.epochs",
        "distill.log_every",
        "distill.generation.max_new_tokens",
        "distill.generation.batch_size",
    )
    optimizer_settings(cfg)  # checks its values
    gen = cfg.distill.generation
    if gen.temperature < 0 or not 0 < gen.top_p <= 1:
        raise ConfigError(
            f"distill.generation: need temperature >= 0 and 0 < top_p <= 1, got {gen.temperature}, {gen.top_p}"
        )
