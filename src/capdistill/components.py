"""The edge between the composed config and the code: every check before compute, then the built parts.

`validate(cfg)` runs, in one line each and before any model is built: the schema's own checks
(each dataclass's `__post_init__`, through `typed_settings`), the names that must exist in the
chosen world, the task card, the models to load, and the components chosen by `_target_`
(allocator, loss, trainer, logger), whose class signatures are their schemas. It returns what it
built on the way (`RunParts`: the typed settings, the loss, the allocator, the trainer factory, the
optimizer settings and the model requests), so the recipe builds none of them again; the code below
takes the objects, never the config.
"""

from __future__ import annotations

import functools
import inspect
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from capdistill.allocation.interface import Allocator, RoundContext
from capdistill.capabilities import CAPABILITIES, COMPOSITES, WEIGHTED, WorldParams
from capdistill.capabilities.paper import PaperSuite
from capdistill.capabilities.real import REAL_CAPABILITIES
from capdistill.capabilities.sources import WorldSources, nested_tuples
from capdistill.config.checks import ConfigError, check_writable, locate
from capdistill.config.hydra_setup import setup
from capdistill.config.model_specs import Engine, HFModel, InitConf, SyntheticModel
from capdistill.config.schema import CurriculumConf, DistillConf, RootConf, World, typed_settings
from capdistill.config.units import parse_tokens
from capdistill.errors import CapdistillError
from capdistill.losses.modules import DistillLoss
from capdistill.models.hf import check_init, checkpoint_shape, resolve_path
from capdistill.models.request import ModelRequest
from capdistill.results.figures import FIGURES
from capdistill.supervision.budget import normalize_weights, split_tokens, with_replay
from capdistill.supervision.openai_server import launch_command
from capdistill.supervision.slices import MAX_BATCHES, MIN_RESPONSE_TOKENS
from capdistill.training.cluster import check_nodes, leading_process
from capdistill.training.optim import OptimizerSettings


def target_of(node: Any, group: str) -> type:
    """The class a `_target_` group names (a one-line error if it names none or cannot be imported)."""
    if not isinstance(node, DictConfig) or "_target_" not in node:
        raise ConfigError(f"{group} has no _target_: pick one with {group}=<option> or set {group}._target_")
    return locate(str(node._target_), group)


def options_of(node: DictConfig) -> dict[str, Any]:
    """A `_target_` group's keyword arguments, as plain Python values."""
    data = OmegaConf.to_container(node, resolve=True, enum_to_str=True)
    return {k: v for k, v in data.items() if not (k.startswith("_") and k.endswith("_"))}


def check_options(node: DictConfig, group: str, skip: tuple[str, ...] = ()) -> None:
    """Fail in one line if the group sets an option its class's constructor does not take."""
    cls = target_of(node, group)
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):  # no signature to read (a builtin): instantiating it reports the problem
        return
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    unknown = [k for k in options_of(node) if k not in params and k not in skip]
    if unknown:
        raise ConfigError(f"{group} ({cls.__name__}) does not take option {unknown[0]!r}; it takes {sorted(params)}")


def build(node: DictConfig, group: str, **runtime: Any) -> Any:
    """Instantiate a `_target_` group with `runtime` arguments; its constructor's own error, in one line."""
    given = [k for k in runtime if k in options_of(node)]
    if given:
        raise ConfigError(f"{group}.{given[0]} is set by the run, not by the config: remove it")
    check_options(node, group, skip=tuple(runtime))
    try:
        return instantiate(node, _convert_="all", **runtime)
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, CapdistillError):
            raise ConfigError(named(str(cause), group, options_of(node))) from None
        raise ConfigError(f"{group}: {cause or err}".splitlines()[0]) from None


def named(message: str, group: str, options: dict[str, Any]) -> str:
    """A constructor's message that opens with one of its options (`temperature must be > 0`) names it as the
    config does (`loss.temperature must be > 0`), so it is not mistaken for another group's option."""
    first = message.split(" ", 1)[0]
    return f"{group}.{message}" if first in options else message


def build_allocator(cfg: DictConfig) -> Allocator:
    """The run's allocator over the configured capabilities."""
    allocator = build(cfg.allocator, "allocator", capabilities=list(cfg.capabilities.names), seed=cfg.seed)
    if not isinstance(allocator, Allocator):
        raise ConfigError(f"allocator._target_ {cfg.allocator._target_} is not a capdistill Allocator")
    return allocator


def build_loss(cfg: DictConfig) -> DistillLoss:
    """The run's KD objective."""
    loss = build(cfg.loss, "loss")
    if not isinstance(loss, DistillLoss):
        raise ConfigError(f"loss._target_ {cfg.loss._target_} is not a capdistill DistillLoss")
    return loss


def trainer_factory(cfg: DictConfig) -> functools.partial[pl.Trainer]:
    """The `trainer` group as a partial Lightning Trainer; each round completes it with its own fit settings."""
    factory = build(cfg.trainer, "trainer")
    if not isinstance(factory, functools.partial):
        raise ConfigError("trainer must set `_partial_: true`: each round builds its own Trainer from it")
    taken = [f for f in fields(RoundTrainer) if f.name in factory.keywords]
    if taken:
        key, where = taken[0].name, taken[0].metadata.get("option")
        raise ConfigError(f"trainer.{key} is set by each round{f' from {where}' if where else ''}: remove it")
    return factory


@dataclass(frozen=True)
class RoundTrainer:
    """The Trainer arguments every round passes itself, the one list of them: the `trainer` group may not set
    them (its value would be silently replaced), and a field's `option` names where its value comes from."""

    max_epochs: int = field(metadata={"option": "distill.epochs"})
    gradient_clip_val: float = field(metadata={"option": "distill.grad_clip"})
    enable_progress_bar: bool  # Lightning's own bar (steps, loss) on a terminal
    logger: bool = field(default=False, metadata={"option": "the logger group"})  # the run logs through RunLogger
    enable_checkpointing: bool = False  # the run saves its own rounds
    enable_model_summary: bool = False
    use_distributed_sampler: bool = False  # every rank takes its shard of every batch (`RankView`)


def round_trainer(make_trainer: Callable[..., pl.Trainer], distill: DistillConf, progress: bool) -> pl.Trainer:
    """A round's Trainer: the `trainer` group completed with the arguments each round sets (`RoundTrainer`)."""
    return make_trainer(**asdict(RoundTrainer(distill.epochs, distill.grad_clip, progress)))


def build_logger(cfg: DictConfig) -> pl.loggers.Logger | None:
    """The `logger` group's Lightning logger (None for `logger=none`, and in every process of a multi-process job
    but the leading one, which logs the run once), with the run's config as hyper-parameters."""
    if not cfg.get("logger") or "_target_" not in cfg.logger or not leading_process():
        return None
    logger = build(cfg.logger, "logger")
    params = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    # numbers a dashboard can sort and plot against; the label as written ('50k') kept beside them
    params["budget"] |= {"total_tokens": parse_tokens(cfg.budget.total_tokens), "label": str(cfg.budget.total_tokens)}
    logger.log_hyperparams(params)
    return logger


def shipped_allocators(conf_dir: Path) -> dict[str, Callable[[list[str], int], Allocator]]:
    """Every allocator option in `conf_dir/allocator` as a factory (capabilities, seed) -> Allocator, composed
    as a run would compose it (defaults lists included). Options that need a setting (fixed's weights,
    single's capability from another world, tilted's capability) are left out."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    setup()

    def factory(node: DictConfig) -> Callable[[list[str], int], Allocator]:
        def make(capabilities: list[str], seed: int) -> Allocator:
            return build(node, "allocator", capabilities=capabilities, seed=seed)

        return make

    names = sorted(
        p.stem for p in (conf_dir / "allocator").glob("*.yaml") if p.stem not in ("fixed", "single", "tilted")
    )
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(conf_dir), version_base="1.3"):
        return {name: factory(compose("train", overrides=[f"allocator={name}"]).allocator) for name in names}


def paper_suite(cfg: DictConfig) -> PaperSuite:
    """The lm-eval suite of `capabilities=paper` for the configured capability names."""
    caps = cfg.capabilities
    raw: dict[str, Any] = OmegaConf.to_container(caps, resolve=True)
    return PaperSuite(
        benchmarks={n: list(raw["benchmarks"][n]) for n in caps.names},
        metrics=raw["metrics"],
        data_files={t: {s: str(Path(p).resolve()) for s, p in f.items()} for t, f in raw["data_files"].items()},
        include_path=[str(Path(p).resolve()) for p in raw["include_path"]],
        max_gen_toks=caps.max_gen_toks,
    )


def world_params(cfg: DictConfig) -> WorldParams:
    """WorldParams from `capabilities.params`."""
    raw = OmegaConf.to_container(cfg.capabilities.params, resolve=True)
    try:
        return WorldParams(**{k: nested_tuples(v) for k, v in raw.items()})
    except TypeError as err:  # a key WorldParams does not take
        raise ConfigError(f"capabilities.params: {err}".replace("WorldParams.__init__() ", "")) from None
    except CapdistillError as err:  # a size the generators cannot honour
        raise ConfigError(str(err)) from None


def world_sources(cfg: DictConfig) -> WorldSources:
    """The world the config describes: its capabilities, tasks and the sizes of a run's held-out sets."""
    caps = cfg.capabilities
    if caps.world == "paper":
        world = WorldSources(None, {}, {}, caps.probe_size, caps.eval_size, paper_suite(cfg))
        world.capabilities = world.suite.pools(caps.probe_size, caps.dev_size)
    elif caps.world == "offline_real":
        spec = {"world": "offline_real", "names": list(caps.names), "train_size": caps.train_size}
        if caps.max_gen_toks is not None:
            spec["max_gen_toks"] = caps.max_gen_toks
        sizes = {"probe_size": caps.probe_size, "eval_size": caps.eval_size, "dev_size": caps.dev_size}
        world = WorldSources.from_spec({**spec, **sizes})
    else:
        world = WorldSources.from_params(world_params(cfg), list(caps.names), caps.probe_size, caps.eval_size)
    world.dev_size = caps.dev_size
    world.requirements = dict(cfg.task.requirements)
    return world


def model_requests(cfg: DictConfig) -> dict[str, ModelRequest]:
    """The teacher and student to load or build, with what a synthetic-world build depends on."""
    return role_requests(typed_settings(cfg))


def role_requests(settings: RootConf) -> dict[str, ModelRequest]:
    """`model_requests` from the config already converted (`typed_settings`)."""
    return {
        role: ModelRequest(
            role=role,
            model=getattr(settings, role),
            world=settings.capabilities.params,
            capabilities=list(settings.capabilities.names),
            cache_dir=Path(settings.paths.cache_dir),
            assets_dir=Path(settings.paths.assets_dir),
            rebuild=settings.rebuild,
            probe_batch_size=settings.capabilities.probe_batch_size,
            accelerator=settings.trainer.get("accelerator", "cpu"),
            precision=settings.trainer.get("precision", "32-true"),
        )
        for role in ("teacher", "student")
    }


def allocator_label(allocator: Allocator) -> str:
    """The record's `allocator`: the class's config name, or its class name for a user's own allocator."""
    return allocator.name or type(allocator).__name__


def loss_label(loss: DistillLoss) -> str:
    return loss.name or type(loss).__name__


@dataclass(frozen=True)
class RunParts:
    """What the edge makes of a run's config, once: the config as typed settings, and the parts built from it."""

    settings: RootConf  # every schema's `__post_init__` check run (`typed_settings`)
    loss: DistillLoss
    allocator: Allocator
    make_trainer: functools.partial[pl.Trainer]  # the `trainer` group; each round completes it (`round_trainer`)
    optim: OptimizerSettings
    models: dict[str, ModelRequest]  # the teacher and the student to load or build


def build_parts(cfg: DictConfig) -> RunParts:
    """The parts without `validate`'s checks across groups (each part's own checks still run): for a caller of
    the Python API that validated nothing; `validate` returns the same parts, built as it checks them."""
    settings = typed_settings(cfg)
    return RunParts(
        settings,
        build_loss(cfg),
        build_allocator(cfg),
        trainer_factory(cfg),
        OptimizerSettings.of(settings.distill),
        role_requests(settings),
    )


def validate(cfg: DictConfig) -> RunParts:
    """Every check that the config alone can answer (raises ConfigError naming the key); returns the parts it
    built on the way, for the run to take as they are."""
    parts = checked_parts(cfg)
    check_writable(cfg.paths.output_dir, "paths.output_dir")
    return parts


def checked_parts(cfg: DictConfig) -> RunParts:
    """`validate` but for the run's own directory, which it leaves uncreated: what a sweep checks of every job
    before it starts the first (`hydra_plugins.capdistill_sweeper`)."""
    settings = typed_settings(cfg)
    models = {"teacher": settings.teacher, "student": settings.student}
    names = list(cfg.capabilities.names)
    if cfg.capabilities.world == World.synthetic:
        unknown = [n for n in names if n not in CAPABILITIES]
        if unknown:
            raise ConfigError(
                f"capabilities.names: unknown capability {unknown[0]!r}; known: {', '.join(CAPABILITIES)}"
            )
        world_params(cfg)
    else:
        validate_benchmark_world(cfg, names, models)
    task = cfg.task
    if task.source not in names and task.source not in COMPOSITES and task.source != WEIGHTED:
        known = ", ".join(names + sorted(COMPOSITES) + [WEIGHTED])
        raise ConfigError(f"task.source: unknown source {task.source!r} for task {task.name}; known: {known}")
    bad = [c for c in task.requirements if c not in names]
    if bad:
        raise ConfigError(f"task.requirements: unknown capability {bad[0]!r} in task {task.name}")
    for role, model in models.items():
        for key in ("mix", "curriculum_mix") if isinstance(model, SyntheticModel) else ():
            stray = [k for k in getattr(model.train, key) if k not in names and k not in COMPOSITES]
            if stray:
                raise ConfigError(f"{role}.train.{key}: unknown capability or task {stray[0]!r}")
    loss = build_loss(cfg)
    allocator = build_allocator(cfg)
    for role, model in models.items():
        if isinstance(model, HFModel):
            resolve_path(model.path, role)
            check_init(model, role)
    check_loss_vocab(loss, models)
    check_engine(models, loss, cfg.capabilities.world)
    if cfg.distill.packing and loss.cross_tokenizer:
        raise ConfigError(f"distill.packing=true needs a same-tokenizer loss; loss={loss.name} pairs two tokenizations")
    check_budget_size(cfg)
    check_curriculum(settings.distill.curriculum, cfg)
    check_static_spend(cfg, allocator)
    if "fsdp" in str(cfg.trainer.get("strategy")) and cfg.trainer.get("accelerator") == "cpu":
        raise ConfigError("trainer.strategy=fsdp needs GPUs: use trainer=fsdp on a GPU machine, or trainer=cpu")
    check_nodes(int(cfg.trainer.get("num_nodes", 1)))
    make_trainer = trainer_factory(cfg)
    check_trainer(make_trainer, settings.distill)
    if cfg.report.figure is not None and cfg.report.figure not in FIGURES:
        raise ConfigError(f"report.figure must be one of {', '.join(FIGURES)}, got {cfg.report.figure!r}")
    if cfg.get("logger") and "_target_" in cfg.logger:
        check_options(cfg.logger, "logger")
    optim = OptimizerSettings.of(settings.distill)
    check_writable(cfg.paths.cache_dir, "paths.cache_dir")
    return RunParts(settings, loss, allocator, make_trainer, optim, role_requests(settings))


def check_engine(models: dict[str, Any], loss: DistillLoss, world: World) -> None:
    """What a teacher written by vLLM or a server cannot serve fails here: an engine gives the teacher's completions
    and its top-k log-probabilities at each written token, not its logits, and there is no teacher to run."""
    student, teacher = models["student"], models["teacher"]
    if isinstance(student, HFModel) and student.engine is not Engine.hf:
        raise ConfigError(f"student.engine={student.engine.value}: only the teacher writes through an engine")
    if not isinstance(teacher, HFModel) or teacher.engine is Engine.hf:
        return
    engine = f"teacher.engine={teacher.engine.value}"
    if teacher.engine is Engine.server and teacher.server.launch:
        check_launch(teacher.server.launch)
    if teacher.init != InitConf():
        raise ConfigError(f"{engine} serves the teacher's checkpoint as saved: leave teacher.init unset")
    if world == World.paper:
        raise ConfigError(
            f"capabilities=paper scores the teacher with lm-eval's in-process HF model: {engine} needs hf"
        )
    if not loss.needs_teacher:
        return
    spec, name = loss.cache_spec(), loss_label(loss)
    if spec is None and loss.sparse_teacher:
        raise ConfigError(
            f"loss.teacher_source=live runs the teacher on every batch, and {engine} has no teacher to run: "
            "use loss.teacher_source=cache"
        )
    if spec is None:
        raise ConfigError(
            f"loss={name} reads the teacher's full logits at every position; {engine} gives its top-k log-probs: "
            "use loss=topk or loss=sft, or teacher.engine=hf"
        )
    if spec.kind != "topk":
        raise ConfigError(
            f"loss={name} draws from the teacher's whole distribution, which {engine} cannot give exactly: "
            "use loss=topk, or teacher.engine=hf"
        )
    most = teacher.vllm.max_logprobs
    if teacher.engine is Engine.vllm and most is not None and most < spec.size:
        raise ConfigError(f"teacher.vllm.max_logprobs={most} is below the {spec.size} rows loss={name} keeps (loss.k)")
    if teacher.chat_template != student.chat_template:
        raise ConfigError(
            f"{engine} keeps rows conditioned on the teacher's prompt format: teacher.chat_template="
            f"{teacher.chat_template} and student.chat_template={student.chat_template} must agree for loss={name}"
        )


def check_launch(template: str) -> None:
    """`teacher.server.launch` must fill in its port and run a program this machine has (after `env`'s settings):
    a missing interpreter fails here, not when a sweep's first job starts the server."""
    argv = launch_command(template, model="model", port=0, name="name")
    if argv and Path(argv[0]).name == "env":  # env's options and NAME=value settings come before the program
        argv = argv[1:]
        while argv and (argv[0].startswith("-") or re.match(r"[A-Za-z_][A-Za-z0-9_]*=", argv[0])):
            argv = argv[1:]
    program = argv[0] if argv else ""
    if not shutil.which(program):
        raise ConfigError(
            f"teacher.server.launch runs {program!r}, which is not here (from {os.getcwd()}): install it or fix the "
            "command (the vllm_cpu_server preset's interpreter comes from `make vllm-env`, or CAPDISTILL_VLLM_PYTHON)"
        )


def configured_vocab(model: Any) -> int | None:
    """The vocabulary size the config states or the checkpoint's config.json declares (None: unknown before loading)."""
    if isinstance(model, SyntheticModel):
        return model.vocab_size  # an upper bound: the trained tokenizer may stop short of it
    if model.init.scratch:
        return None
    return (checkpoint_shape(model.path) or {}).get("vocab_size")


def check_loss_vocab(loss: DistillLoss, models: dict[str, Any]) -> None:
    """`loss.k` or `loss.vocab_size` larger than a vocabulary the config already shows fails here, not after loading."""
    if not loss.needs_teacher or loss.cross_tokenizer:
        return
    known = {role: v for role, m in models.items() if (v := configured_vocab(m)) is not None}
    if not known:
        return
    role, vocab = min(known.items(), key=lambda item: item[1])
    for option in ("k", "vocab_size"):
        value = getattr(loss, option, None)
        if isinstance(value, int) and value > vocab:
            raise ConfigError(f"loss.{option}={value} exceeds the {role}'s vocabulary ({vocab} entries)")


def check_budget_size(cfg: DictConfig) -> None:
    """A round slice too small for any response, or larger than a round can ever generate, fails before compute."""
    total, rounds = parse_tokens(cfg.budget.total_tokens), cfg.budget.rounds
    per_round = total // rounds
    if per_round < MIN_RESPONSE_TOKENS:
        raise ConfigError(
            f"budget.total_tokens={total} over {rounds} rounds gives {per_round} tokens per round; no response "
            f"fits (each is at least {MIN_RESPONSE_TOKENS} tokens): raise the budget or lower budget.rounds"
        )
    gen = cfg.distill.generation
    most = MAX_BATCHES * gen.batch_size * gen.max_new_tokens
    if per_round > most:
        raise ConfigError(
            f"budget.total_tokens={total} gives {per_round} tokens per round, more than a round can generate "
            f"({MAX_BATCHES} batches of {gen.batch_size} responses of at most {gen.max_new_tokens} tokens = {most}): "
            "lower the budget or raise budget.rounds"
        )


def check_curriculum(curriculum: CurriculumConf, cfg: DictConfig) -> None:
    """A curriculum's mixes weigh as many difficulty levels as the world has."""
    levels = world_params(cfg).levels if cfg.capabilities.world == World.synthetic else 1
    if curriculum.levels and curriculum.levels != levels:
        raise ConfigError(
            f"distill.curriculum mixes {curriculum.levels} difficulty levels, but this world has {levels}: "
            "use curriculum=none, or give each stage's mix one entry per level"
        )


def check_static_spend(cfg: DictConfig, allocator: Allocator) -> None:
    """An allocator whose split never changes, giving no capability a response's worth of a round's slice of the
    budget (replay included), leaves each round to spend only what earlier rounds left: refused before compute."""
    if not allocator.static:
        return
    names = list(cfg.capabilities.names)
    total, rounds = parse_tokens(cfg.budget.total_tokens), cfg.budget.rounds
    requirements = normalize_weights(dict(cfg.task.requirements), names)
    context = RoundContext(0, rounds, names, requirements, {}, None, total_tokens=total, spent_tokens=0)
    weights = with_replay(normalize_weights(allocator.decide(context).split, names), cfg.budget.replay)
    per_round = total // rounds
    if max(split_tokens(per_round, weights).values()) < MIN_RESPONSE_TOKENS:
        raise ConfigError(
            f"budget.total_tokens={total} over {rounds} rounds gives {per_round} tokens a round; split by "
            f"allocator={allocator.name} that gives no capability {MIN_RESPONSE_TOKENS} tokens, the shortest "
            "response, so a round spends only what earlier ones left: raise the budget or lower budget.rounds"
        )


def check_trainer(make_trainer: functools.partial[pl.Trainer], distill: DistillConf) -> None:
    """Build the Trainer once as a round would, so Lightning's own checks (precision, devices, strategy)
    fail here in one line instead of after the teacher has written the first round."""
    try:
        round_trainer(make_trainer, distill, progress=False)
    except Exception as err:  # Lightning raises ValueError, MisconfigurationException, RuntimeError...
        raise ConfigError(f"trainer: {err}".splitlines()[0]) from None


def validate_benchmark_world(cfg: DictConfig, names: list[str], models: dict[str, Any]) -> None:
    """world=paper or offline_real: known capabilities, local data files exist, the models are HF models."""
    caps = cfg.capabilities
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
    for task, files in caps.data_files.items():
        for split, path in files.items():
            if not Path(path).is_file():
                raise ConfigError(f"capabilities.data_files.{task}.{split}: no file {path}")
    for role, model in models.items():
        if not isinstance(model, HFModel):
            raise ConfigError(
                f"capabilities={caps.world.value} needs HF models: {role}={model.name} is a synthetic-world model"
            )
