"""`capdistill distill`: one distillation run, round by round, ending in an atomic `record.json`.

Each round: the allocator splits the round's slice of the budget across capabilities from
dev signals alone, the teacher writes responses to train prompts until each capability's
share is spent, the student trains on them (Lightning, one optimizer for the run), and the
log-likelihood proxy is measured on the dev sets; at evaluation checkpoints and after the
last round the eval sets are scored by exact match (reports only). After each round the
student, the optimizer state and the round's record entry are saved atomically under
`rounds/`, so a killed run restarted in the same output directory resumes after its last
completed round, exactly.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from transformers import AutoModelForCausalLM, PreTrainedTokenizerBase

import capdistill
from capdistill.allocation import Allocator, RoundContext
from capdistill.allocation.interface import decision_view
from capdistill.capabilities import Example
from capdistill.capabilities.base import TASK
from capdistill.capabilities.sources import WorldSources
from capdistill.components import (
    allocator_label,
    build_allocator,
    build_logger,
    build_loss,
    loss_label,
    optimizer_settings,
    trainer_factory,
    world_sources,
)
from capdistill.config.schema import ModelKind, typed_settings
from capdistill.config.units import parse_tokens
from capdistill.distill.loggers import RunLogger
from capdistill.distill.module import DistillationModule
from capdistill.distill.pilots import PILOTS_FILE, run_pilots
from capdistill.distill.reference import SPLITS, proxy_scores, reference_scores
from capdistill.distill.rounds import RoundSettings, generate_round, train_round
from capdistill.errors import CapdistillError
from capdistill.evaluation.lmeval import lmeval_scores
from capdistill.evaluation.lmeval_tasks import hf_lm
from capdistill.evaluation.proxy import Proxy
from capdistill.evaluation.scores import exact_match, suite_utility, task_sets
from capdistill.io import atomic_dir, atomic_write_json
from capdistill.losses import DistillLoss
from capdistill.models.hf import load_model, load_tokenizer, resolve_path
from capdistill.prompting import response_ids, uses_chat_template
from capdistill.results.record import RECORD_FILE, check_record
from capdistill.supervision.budget import normalize_weights, round_slice, split_tokens
from capdistill.supervision.slices import PromptStream
from capdistill.world.build import WorldModel, ensure_model

log = logging.getLogger(__name__)
ROUNDS_DIR = "rounds"
ROUND_FILE = "round.json"
STUDENT_DIR = "student"
OPTIMIZER_FILE = "optimizer.pt"
LMEVAL_DIR = "lmeval"


# --------------------------------------------------------------------------- models


def load_role(cfg: DictConfig, role: str, sources: WorldSources, output_dir: Path) -> WorldModel:
    """The teacher or student: the synthetic world's build (built on demand), or an HF model."""
    mcfg = cfg[role]
    if mcfg.kind == ModelKind.synthetic:
        return ensure_model(cfg, role, sources, output_dir)
    cache = cfg.paths.cache_dir
    tokenizer = load_tokenizer(mcfg, role, cache)
    model = load_model(mcfg, role, cache, tokenizer)
    init = OmegaConf.to_container(mcfg.init)
    if mcfg.init.scratch:
        init["arch"] = OmegaConf.to_container(mcfg.arch)
        init["seed"] = mcfg.seed
    loading = {
        k: OmegaConf.to_container(mcfg, enum_to_str=True)[k] for k in ("dtype", "attn_implementation", "chat_template")
    }
    info = {"name": mcfg.name, "path": mcfg.path, "init": init, "loading": loading}
    return WorldModel(model, tokenizer, Path(resolve_path(mcfg.path, role, cache)), info)


def same_tokenizer(a: PreTrainedTokenizerBase, b: PreTrainedTokenizerBase) -> bool:
    return a.get_vocab() == b.get_vocab()


def check_tokenizers(cfg: DictConfig, loss: DistillLoss) -> None:
    """A same-tokenizer loss across different tokenizers fails here, before any model is loaded."""
    if not loss.needs_teacher or loss.cross_tokenizer:
        return
    t, s = cfg.teacher, cfg.student
    if t.kind == ModelKind.synthetic and s.kind == ModelKind.synthetic:
        same = (t.tokenizer, t.vocab_size) == (s.tokenizer, s.vocab_size)
    elif t.kind == ModelKind.hf and s.kind == ModelKind.hf:
        cache = cfg.paths.cache_dir
        same = t.path == s.path or same_tokenizer(
            load_tokenizer(t, "teacher", cache), load_tokenizer(s, "student", cache)
        )
    else:
        same = False
    if not same:
        raise CapdistillError(
            f"loss={loss_label(loss)} needs teacher and student to share a tokenizer, but {t.name} and {s.name} "
            "tokenize differently; use a cross-tokenizer loss (loss=uld or loss=mlot) or loss=sft"
        )


def align_vocab(loss: DistillLoss, teacher: WorldModel, student: WorldModel) -> None:
    """Same tokenizer, differently padded logits (e.g. Qwen2.5-7B 152064 vs 0.5B 151936): slice to the tokenizer."""
    if not loss.needs_teacher or loss.cross_tokenizer or getattr(loss, "vocab_size", 0) is not None:
        return
    widths = {m.model.get_output_embeddings().weight.shape[0] for m in (teacher, student)}
    if len(widths) > 1:
        loss.vocab_size = len(student.tokenizer)
        log.info("teacher and student logits differ in width %s; comparing the first %d", widths, loss.vocab_size)


def check_budget(total: int, rounds: int, sets: dict[str, list[Example]], tokenizer: PreTrainedTokenizerBase) -> None:
    """A round's slice must fit at least the shortest reference response of some capability (`sets`:
    the capabilities' dev sets)."""
    shortest = min(len(response_ids(tokenizer, e.response)) for examples in sets.values() for e in examples)
    if total // rounds < shortest:
        raise CapdistillError(
            f"budget.total_tokens={total} over {rounds} rounds gives {total // rounds} tokens per round, "
            f"smaller than one example ({shortest} tokens); raise the budget or lower budget.rounds"
        )


# --------------------------------------------------------------------------- rounds on disk


def run_identity(config: DictConfig | dict[str, Any]) -> dict[str, Any]:
    """What must match for a run directory to be resumed: the config but its paths and logging."""
    data = OmegaConf.to_container(config, resolve=True, enum_to_str=True) if isinstance(config, DictConfig) else config
    return {k: v for k, v in data.items() if k not in ("paths", "logger", "rebuild", "report")}


def run_fingerprint(cfg: DictConfig) -> str:
    return hashlib.sha256(json.dumps(run_identity(cfg), sort_keys=True).encode()).hexdigest()[:16]


def config_changes(saved: dict[str, Any], current: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ. A key one side lacks counts only if the other side sets it:
    a config field added since (or removed) and left unset is no change, so runs stay resumable."""
    changes = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changes += config_changes(a, b, f"{prefix}{key}.")
        elif a != b:
            changes.append(f"{prefix}{key}")
    return changes


def same_run(saved_fingerprint: str | None, saved_config: dict[str, Any] | None, cfg: DictConfig) -> list[str]:
    """[] when saved state belongs to this run's config, else the differing keys (['?'] if unknown)."""
    if saved_fingerprint == run_fingerprint(cfg):
        return []
    if saved_config is None:
        return ["?"]
    return config_changes(run_identity(saved_config), run_identity(cfg))


def finished_record(output_dir: Path, cfg: DictConfig) -> dict[str, Any] | None:
    """The record of a completed run of this config in `output_dir` (a relaunched sweep skips it)."""
    path = output_dir / RECORD_FILE
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    return None if same_run(record.get("fingerprint"), record.get("config"), cfg) else record


def completed_rounds(output_dir: Path, cfg: DictConfig) -> list[dict[str, Any]]:
    """Record entries of the rounds a previous run in this directory completed, in order."""
    entries = []
    for path in sorted((output_dir / ROUNDS_DIR).glob("round-*")):
        if not (path / ROUND_FILE).is_file():
            continue
        saved = json.loads((path / ROUND_FILE).read_text())
        changes = same_run(saved["fingerprint"], saved.get("config"), cfg)
        if changes:
            differs = "" if changes == ["?"] else f" ({', '.join(changes[:3])}{', ...' if len(changes) > 3 else ''})"
            raise CapdistillError(
                f"{output_dir} holds rounds of a run with a different config{differs}; resume with the same "
                "overrides or choose a new output directory (hydra.run.dir=...)"
            )
        entries.append(saved["entry"])
    if [e["round"] for e in entries] != list(range(len(entries))):
        raise CapdistillError(f"{output_dir / ROUNDS_DIR} is missing a round; choose a new output directory")
    return entries


def round_dir(output_dir: Path, index: int) -> Path:
    return output_dir / ROUNDS_DIR / f"round-{index:03d}"


def save_round(
    output_dir: Path,
    index: int,
    student: WorldModel,
    module: DistillationModule,
    entry: dict[str, Any],
    cfg: DictConfig,
) -> None:
    """Write the round's entry, student and optimizer state atomically; drop the previous round's
    weights and optimizer state (its entry stays)."""
    with atomic_dir(round_dir(output_dir, index), replace=True) as tmp:
        student.model.save_pretrained(tmp / STUDENT_DIR, safe_serialization=True)
        student.tokenizer.save_pretrained(tmp / STUDENT_DIR)
        torch.save(module.optimizer_state(), tmp / OPTIMIZER_FILE)
        saved = {"fingerprint": run_fingerprint(cfg), "config": run_identity(cfg), "entry": entry}
        (tmp / ROUND_FILE).write_text(json.dumps(saved, indent=2))
    if index > 0:
        shutil.rmtree(round_dir(output_dir, index - 1) / STUDENT_DIR, ignore_errors=True)
        (round_dir(output_dir, index - 1) / OPTIMIZER_FILE).unlink(missing_ok=True)


def resume_state(
    output_dir: Path, history: list[dict[str, Any]], student: WorldModel, module: DistillationModule
) -> None:
    """Load the student weights and optimizer state saved after the last completed round."""
    last = round_dir(output_dir, len(history) - 1)
    resumed = AutoModelForCausalLM.from_pretrained(last / STUDENT_DIR)
    student.model.load_state_dict(resumed.state_dict())
    module.load_optimizer_state(torch.load(last / OPTIMIZER_FILE, weights_only=False))


# --------------------------------------------------------------------------- one round


def context_for(
    index: int,
    cfg: DictConfig,
    requirements: dict[str, float],
    before: dict[str, Any],
    total: int,
    history: list[dict[str, Any]],
) -> RoundContext:
    """What the allocator sees before round `index`: dev signals and the decision views of earlier rounds."""
    return RoundContext(
        round=index,
        rounds=cfg.budget.rounds,
        capabilities=list(cfg.capabilities.names),
        requirements=requirements,
        probe_loglik=dict(before.get("probe_loglik", {})),
        task_loglik=before.get("task_loglik"),
        total_tokens=total,
        spent_tokens=sum(sum(e["spent_by_capability"].values()) for e in history),
        history=[decision_view(e) for e in history],
    )


def checkpoint_rounds(rounds: int, fractions: list[float]) -> set[int]:
    """Rounds (0-based) after which the eval sets are scored: the first round reaching each fraction
    of the budget's rounds, and the last round."""
    return {max(math.ceil(round(f * rounds, 9)) - 1, 0) for f in fractions} | {rounds - 1}


# --------------------------------------------------------------------------- the run


def distill(cfg: DictConfig) -> dict[str, Any]:
    """Run (or resume) one distillation and write `record.json`; returns the record."""
    start = time.time()
    out = Path(cfg.paths.output_dir)
    names = list(cfg.capabilities.names)
    total, rounds = parse_tokens(cfg.budget.total_tokens), cfg.budget.rounds
    typed = typed_settings(cfg)
    loss = build_loss(cfg)
    allocator = build_allocator(cfg)
    optim = optimizer_settings(cfg)
    settings = RoundSettings(
        make_trainer=trainer_factory(cfg),
        generation=typed.distill.generation,
        overflow=typed.distill.overflow,
        seed=cfg.seed,
        batch_size=cfg.distill.batch_size,
        epochs=cfg.distill.epochs,
        grad_clip=cfg.distill.grad_clip,
    )
    requirements = normalize_weights(dict(cfg.task.requirements), names)
    check_tokenizers(cfg, loss)
    sources = world_sources(cfg)
    finished = finished_record(out, cfg)
    if finished is not None:
        log.info("%s already holds this run's complete record: skipping it", out)
        return finished
    history = completed_rounds(out, cfg)
    # held-out sets, drawn per seed (common to every allocator): dev decides, eval reports
    seeds = {"dev": cfg.seed, "eval": cfg.evaluation.seed}
    dev_sets = sources.held_out_sets("dev", cfg.task.source, seeds["dev"])
    eval_sets = sources.held_out_sets("eval", cfg.task.source, seeds["eval"])

    teacher = load_role(cfg, "teacher", sources, out)
    student = load_role(cfg, "student", sources, out)
    check_budget(total, rounds, {c: dev_sets[c] for c in names}, student.tokenizer)
    if getattr(allocator, "warmup", 0) >= rounds:
        log.warning(
            "allocator=%s only plays random warm-up candidates: budget.rounds=%d <= allocator.warmup=%d",
            allocator_label(allocator),
            rounds,
            allocator.warmup,
        )
    align_vocab(loss, teacher, student)
    device = torch.device("cuda" if cfg.trainer.accelerator in ("gpu", "cuda") else "cpu")
    teacher.model.eval().requires_grad_(False)
    teacher.model.to(device)
    student.model.to(device)  # every proxy of the run on one device: its differences are the reward
    batch = cfg.capabilities.probe_batch_size

    t0 = time.time()
    reference = reference_scores(cfg, teacher, student, sources, dev_sets, eval_sets, seeds)
    responses = reference.pop("dev_responses")
    proxy = Proxy(student.tokenizer, dev_sets, responses, batch)  # every set: pilots and checkpoints
    head_only = proxy.decide(student.model)  # on the student base, as in the reference scores
    setup_probing = time.time() - t0
    identification = run_pilots(
        allocator,
        settings,
        total=total,
        teacher=teacher,
        student=student,
        loss=loss,
        optim=optim,
        sources=sources,
        proxy=proxy,
        base=reference["student_base"],
        device=device,
        task_source=cfg.task.source,
        first_seed_index=rounds,
        path=out / PILOTS_FILE,
        fingerprint=run_fingerprint(cfg),
    )
    streams = {c: PromptStream(sources.capabilities[c], str(cfg.seed), sources.difficulties) for c in names}
    logger = RunLogger(build_logger(cfg))
    module = DistillationModule(
        student.model, teacher.model if loss.needs_teacher else None, loss, optim, logger, cfg.distill.log_every
    )
    if history:
        log.info("resuming after round %d of %d from %s", len(history), rounds, out / ROUNDS_DIR)
        resume_state(out, history, student, module)
    replay(allocator, cfg, requirements, reference["student_base"], total, history)
    checkpoints = checkpoint_rounds(rounds, list(cfg.evaluation.checkpoints))
    # between checkpoints, only the dev sets a decision reads: the loop stays lean
    signals = allocator.signals(requirements)
    read = {n for n in signals if n != TASK} | (task_sets(sources, cfg.task.source) if TASK in signals else set())
    decision_proxy = Proxy(
        student.tokenizer, {n: dev_sets[n] for n in read}, {n: responses[n] for n in read}, batch, head_only
    )

    try:
        for index in range(len(history), rounds):
            before = history[-1] if history else reference["student_base"]
            context = context_for(index, cfg, requirements, before, total, history)
            t_allocate = time.time()
            allocation = normalize_weights(allocator.allocate(context), names)
            allotted = round_slice(total, context.spent_tokens, rounds - index)
            shares = split_tokens(allotted, allocation)
            cursors = {
                c: sum(e.get("prompts_by_capability", e["examples_by_capability"])[c] for e in history) for c in names
            }

            t_generate = time.time()
            slices = generate_round(settings, shares, streams, cursors, teacher, student, device)
            t_train = time.time()
            spent = sum(s.spent for s in slices)
            progress = (context.spent_tokens / total, (context.spent_tokens + spent) / total)
            offset = sum(e["train_steps"] for e in history)
            steps, trained, losses = train_round(settings, index, slices, module, teacher, student, progress, offset)
            t_proxy = time.time()
            student.model.to(device)
            checkpoint = index in checkpoints
            signal = {}
            if checkpoint or read:
                signal = proxy_scores(proxy if checkpoint else decision_proxy, student.model, sources, cfg.task.source)
            t_eval = time.time()
            scores = {}
            if checkpoint:
                scores = exact_match(student.model, student.tokenizer, sources, eval_sets, cfg.task.source, batch)
            t_update = time.time()
            by_slice = {s.capability: s for s in slices}
            entry = {
                "round": index,
                "allocation": allocation,
                "allotted_tokens": allotted,
                "allotted_by_capability": shares,
                "spent_by_capability": {c: by_slice[c].spent if c in by_slice else 0 for c in names},
                "examples_by_capability": {c: len(by_slice[c].examples) if c in by_slice else 0 for c in names},
                "prompts_by_capability": {c: by_slice[c].prompts if c in by_slice else 0 for c in names},
                "truncated_examples": sum(e.truncated for s in slices for e in s.examples),
                "shortfall_tokens": allotted - spent,
                "teacher_generated_tokens": sum(s.generated_tokens for s in slices),
                "student_trained_tokens": trained,
                "train_steps": steps,
                "train_loss": {"first": losses[0], "last": losses[-1]} if losses else None,
                **signal,
                **scores,
                "splits": {**{k: "dev" for k in signal}, **dict.fromkeys(scores, "eval")},
                "decision": allocator.decision,
            }
            entry["update"] = allocator.update(context, allocation, decision_view(entry))
            done = time.time()
            entry["timing"] = {
                "allocator_s": (t_generate - t_allocate) + (done - t_update),
                "generation_s": t_train - t_generate,
                "training_s": t_proxy - t_train,
                "proxy_s": t_eval - t_proxy,
                "eval_s": t_update - t_eval,
                "probing_s": t_update - t_proxy,
            }
            save_round(out, index, student, module, entry, cfg)
            history.append(entry)
            logger.log_round(entry, offset + steps)
            log.info(
                "round %d/%d: spent %d tokens%s%s",
                index + 1,
                rounds,
                sum(entry["spent_by_capability"].values()),
                f", task dev proxy {entry['task_loglik']:.4f}" if "task_loglik" in signal else "",
                f", task utility (eval) {entry['task_utility']:.1f}" if scores else "",
            )
        final_dev = dev_task_utility(student, sources, dev_sets, cfg.task.source, batch)
        final_eval = final_lmeval(cfg, student, sources, eval_sets, out)
        record = build_record(cfg, history, reference, identification, total, setup_probing, time.time() - start)
        record["allocator"], record["loss"] = allocator_label(allocator), loss_label(loss)
        record["final_dev"] = final_dev
        record["fingerprint"] = run_fingerprint(cfg)
        if final_eval is not None:
            record["lmeval"] = final_eval
        check_record(record)
        atomic_write_json(out / RECORD_FILE, record)
        logger.log_final(record)
    finally:
        logger.finish()
    log.info("record: %s", out / RECORD_FILE)
    return record


def dev_task_utility(
    student: WorldModel, sources: WorldSources, dev_sets: dict[str, list[Example]], task_source: str, batch: int
) -> dict[str, Any] | None:
    """The final student's task exact match on the dev split: what chooses among runs (grid's split)
    without reading eval. Only the sets the task's score needs are generated. A benchmark suite is
    scored by lm-eval on its own evaluation docs, so it has none (None)."""
    if sources.suite is not None:
        return None
    sets = {n: dev_sets[n] for n in task_sets(sources, task_source)}
    scores = exact_match(student.model, student.tokenizer, sources, sets, task_source, batch)
    return {"split": "dev", "task_utility": scores["task_utility"], "n": scores["n"]["task"]}


def final_lmeval(
    cfg: DictConfig, student: WorldModel, sources: WorldSources, eval_sets: dict[str, list[Example]], out: Path
) -> dict[str, Any] | None:
    """The final student scored through lm-eval: the exported eval sets (kept under `lmeval/` to
    re-score it later), or a benchmark suite's tasks on `evaluation.limit` items (all by default)."""
    if not cfg.evaluation.lmeval:
        return None
    t0 = time.time()
    model, tokenizer, batch = student.model, student.tokenizer, cfg.evaluation.batch_size
    if sources.suite is None:
        scores = lmeval_scores(model, tokenizer, sources, eval_sets, cfg.task.source, out / LMEVAL_DIR, batch)
    else:
        chat = uses_chat_template(tokenizer)
        suite = sources.suite.score(hf_lm(model, tokenizer, batch, chat), cfg.evaluation.limit, chat, capped=False)
        utility = suite_utility(suite["probe"], sources, cfg.task.source)
        scores = {"probe": suite["probe"], "task_utility": utility, "tasks": suite["benchmarks"]}
    scores["timing_s"] = time.time() - t0
    log.info("lm-eval: task utility %.1f, probe %s", scores["task_utility"], scores["probe"])
    return scores


def replay(
    allocator: Allocator,
    cfg: DictConfig,
    requirements: dict[str, float],
    base: dict[str, Any],
    total: int,
    history: list[dict[str, Any]],
) -> None:
    """Feed a resumed run's completed rounds to the allocator, as if it had just run them."""
    for index, entry in enumerate(history):
        before = history[index - 1] if index else base
        context = context_for(index, cfg, requirements, before, total, history[:index])
        allocator.allocate(context)
        allocator.update(context, entry["allocation"], decision_view(entry))


def build_record(
    cfg: DictConfig,
    history: list[dict[str, Any]],
    reference: dict[str, Any],
    identification: dict[str, Any] | None,
    total: int,
    setup_probing: float,
    wall: float,
) -> dict[str, Any]:
    names = list(cfg.capabilities.names)
    spent = {c: sum(e["spent_by_capability"][c] for e in history) for c in names}
    keys = ("allocator_s", "generation_s", "training_s", "proxy_s", "eval_s", "probing_s")
    timing = {k: sum(e["timing"][k] for e in history) for k in keys}
    timing["reference_s"] = setup_probing
    timing["probing_s"] += setup_probing
    timing["decision_s"] = timing["allocator_s"] + timing["proxy_s"]  # what deciding costs per run
    timing["decision_fraction"] = timing["decision_s"] / wall
    last = history[-1]
    return {
        "config": OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
        "seed": cfg.seed,
        "version": capdistill.__version__,
        "experiment": cfg.experiment_name,
        "task": cfg.task.name,
        "budget": {
            "total_tokens": total,
            "rounds": cfg.budget.rounds,
            "spent_tokens": sum(spent.values()),
            "spent_by_capability": spent,
            "shortfall_tokens": total - sum(spent.values()),
            "teacher_generated_tokens": sum(e["teacher_generated_tokens"] for e in history),
            "student_trained_tokens": sum(e["student_trained_tokens"] for e in history),
        },
        "rounds": history,
        "final": {
            **{k: last[k] for k in ("probe", "task_utility", "n", "probe_loglik", "task_loglik")},
            "splits": SPLITS,
        },
        "reference": reference,
        "identification": identification,
        "timing": {**timing, "total_s": wall},
    }
