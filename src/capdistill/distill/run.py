"""`capdistill distill`: the recipe of one distillation run, top to bottom.

`__init__` takes the parts `components.validate` built from the config (loss, allocator, trainer
factory, optimizer, typed settings: the edge, below which parts take values and built objects) and
reads the config once; `setup` loads the models and what they score. `run_round` is one round of
ReAD's loop, one step a method: `allocate` splits the round's slice of the budget from dev signals
alone, `generate` has the teacher write responses to train prompts until each capability's share
is spent, `train` fits the student on them (Lightning, one optimizer for the run), `measure` takes
the log-likelihood proxy on the dev sets (and at evaluation checkpoints and after the last round
`evaluate` scores the eval sets by exact match, reports only), and `record` saves the round once
the allocator has learnt from it. `finish` scores the final student and writes `record.json` atomically. Each round is
saved as it completes (`distill.resume`), so a killed run restarted in the same output directory
resumes after its last completed round, exactly. The leading process holds the output directory while it
runs (`io.holding`), and Ctrl-C or a full disk ends a run in one line saying what it kept (`stops_reported`).
"""

from __future__ import annotations

import functools
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

import capdistill
from capdistill.allocation import RoundContext
from capdistill.allocation.interface import Allocation, decision_view
from capdistill.capabilities import Example
from capdistill.capabilities.base import TASK
from capdistill.capabilities.real.sandbox import UNSAFE, UNSAFE_ENV, execution_mode
from capdistill.capabilities.sources import WorldSources
from capdistill.components import RunParts, allocator_label, build_logger, build_parts, loss_label, world_sources
from capdistill.config.units import parse_tokens
from capdistill.distill.follow import wait_for
from capdistill.distill.loggers import RunLogger, round_line
from capdistill.distill.module import DistillationModule
from capdistill.distill.pilots import PILOTS_FILE, run_pilots
from capdistill.distill.reference import SPLITS, dev_exact_match, proxy_scores, reference_scores
from capdistill.distill.resume import (
    ROUNDS_DIR,
    completed_rounds,
    kept_rounds,
    load_supervision,
    resume_state,
    save_round,
    save_supervision,
)
from capdistill.distill.roles import align_vocab, check_budget, check_tokenizers, load_role, teacher_engine
from capdistill.distill.rounds import RoundSettings, generate_round, train_round
from capdistill.errors import CapdistillError
from capdistill.evaluation.lmeval import lmeval_scores
from capdistill.evaluation.lmeval_tasks import hf_lm
from capdistill.evaluation.proxy import Proxy
from capdistill.evaluation.scores import exact_match, suite_utility, task_sets
from capdistill.io import atomic_write_json, full_disk_line, holding, interactive, remove_stale_temporaries
from capdistill.models.packing import check_packing
from capdistill.models.request import LoadedModel
from capdistill.prompting import uses_chat_template
from capdistill.results.identity import SKIPPING, finished_record, run_fingerprint, run_identity
from capdistill.results.record import RECORD_FILE, Record, RoundEntry
from capdistill.supervision.budget import normalize_weights, round_slice, split_tokens, with_replay
from capdistill.supervision.engines import TeacherEngine
from capdistill.supervision.slices import PromptStream, Slice
from capdistill.supervision.teacher_cache import cache_summary, merge_summaries
from capdistill.training.cluster import leading_process
from capdistill.training.heads import check_linear_head

log = logging.getLogger(__name__)
LMEVAL_DIR = "lmeval"


def distill(cfg: DictConfig, parts: RunParts | None = None) -> dict[str, Any]:
    """Run (or resume) one distillation and write `record.json`; returns the record. `parts`: what
    `components.validate(cfg)` returned (built here, unchecked, if not given). The leading process holds the
    output directory before it reads anything there (a second run into it is refused in one line); the processes
    that train along read what it writes, so they hold nothing."""
    out = Path(cfg.paths.output_dir)
    with stops_reported(out, cfg.budget.rounds):
        recipe = DistillRecipe(cfg, out, parts)
        with holding(out) if recipe.writes else nullcontext():
            return complete(recipe)


def complete(recipe: DistillRecipe) -> dict[str, Any]:
    """The recipe's run from where its directory stands: skipped if its record is complete, else resumed."""
    out = recipe.out
    finished = finished_record(out, recipe.identity)
    if finished is not None:
        log.info(SKIPPING, out)
        return finished
    try:
        recipe.setup()
        for index in range(len(recipe.history), recipe.rounds):
            recipe.run_round(index)
        record = recipe.finish()
    finally:
        if recipe.logger is not None:  # a W&B run opened in setup is closed whatever fails after it
            recipe.logger.finish()
        if recipe.engine is not None:
            recipe.engine.close()
    if recipe.writes:
        log.info("record: %s", out / RECORD_FILE)
    else:
        log.info("trained along; the leading process (node 0's) writes the rounds and the record")
    return record


# What stops a run as Ctrl-C does: SIGINT, and SIGTERM (`kill`, a scheduler's preemption or time limit).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM, with what the run kept: the CLI says it in one line and exits with status 128 + the
    signal's number (130, 143), as a shell reports a process the signal ended."""

    def __init__(self, message: str, signum: int = signal.SIGINT) -> None:
        super().__init__(message)
        self.signum = signum


@contextmanager
def stops_reported(out: Path, rounds: int) -> Iterator[None]:
    """End a run stopped by Ctrl-C, SIGTERM or a full disk in one line saying how many rounds it kept and how to
    resume. Either signal becomes `RunInterrupted`, also where Lightning turned it into `SystemExit(1)` inside a
    fit (why the signals are watched here): a SIGTERM no longer kills the process between two writes, so the run
    directory is released and a served teacher stopped. A full device or quota becomes a CapdistillError naming
    the file (`io.full_disk_line`)."""
    seen: list[int] = []

    def watch(signum: int, frame: Any) -> None:
        seen.append(signum)
        signal.default_int_handler(signum, frame)

    main = threading.current_thread() is threading.main_thread()  # only the main thread may set a handler
    previous = {signum: signal.signal(signum, watch) for signum in STOP_SIGNALS} if main else {}
    try:
        yield
    except (KeyboardInterrupt, SystemExit) as err:
        if isinstance(err, SystemExit) and not seen:
            raise
        signum = seen[0] if seen else signal.SIGINT
        what = "interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}"
        raise RunInterrupted(f"{what}; {kept(out, rounds)}: run the same command again to resume", signum) from None
    except Exception as err:
        line = full_disk_line(err, getattr(err, "filename", None) or out)
        if line is None:
            raise
        raise CapdistillError(
            f"{line}; {kept(out, rounds)}: free some space and run the same command again to resume"
        ) from err
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def kept(out: Path, rounds: int) -> str:
    return f"{kept_rounds(out)} of {rounds} rounds kept in {out / ROUNDS_DIR}"


@contextmanager
def timed(laps: dict[str, float], key: str) -> Iterator[None]:
    """Add the block's wall time to `laps[key]` (a round's timing: a step may run in two laps)."""
    start = time.time()
    yield
    laps[key] = laps.get(key, 0.0) + time.time() - start


@dataclass(frozen=True)
class RoundPlan:
    """What allocation settled before the teacher writes a round: the decision, the tokens and the prompts."""

    decided: Allocation
    allocation: dict[str, float]  # the allocator's own split, normalised: what it learns from
    allotted: int  # the round's slice of the budget
    shares: dict[str, int]  # each capability's tokens of it, replay included
    cursors: dict[str, int]  # where each capability's prompt stream resumes
    mix: tuple[float, ...] | None  # the prompts' difficulty mix (a curriculum), if any


class DistillRecipe:
    """One run's state: the parts built from the config, and the rounds completed so far."""

    def __init__(self, cfg: DictConfig, out: Path, parts: RunParts | None = None) -> None:
        """The parts the config alone determines (no model yet), from `parts` (what `components.validate`
        returned; built here, unchecked, if not given): the one place the recipe reads the config."""
        parts = build_parts(cfg) if parts is None else parts
        settings = parts.settings
        self.start = time.time()
        self.out = out
        # another node's process (or a copy Lightning started per device) runs the same rounds in lockstep:
        # it reads what the leading process saved (so it resumes where that one does) and writes nothing
        self.writes = leading_process()
        self.config = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)  # the record's, as plain data
        self.identity = run_identity(self.config)
        self.names = list(settings.capabilities.names)
        self.total, self.rounds = parse_tokens(settings.budget.total_tokens), settings.budget.rounds
        self.replay = settings.budget.replay  # the general replay slice's fraction of every round
        self.task_source, self.batch = settings.task.source, settings.capabilities.probe_batch_size
        self.seed, self.experiment, self.task_name = settings.seed, settings.experiment_name, settings.task.name
        self.card = dict(settings.task.requirements)  # the task card's requirements, as written
        self.loss, self.allocator, self.optim, self.models = parts.loss, parts.allocator, parts.optim, parts.models
        self.settings = RoundSettings(
            parts.make_trainer, settings.distill, settings.seed, progress=interactive(), cache=self.loss.cache_spec()
        )
        self.requirements = normalize_weights(self.card, self.names)
        self.sources: WorldSources = world_sources(cfg)
        self.evaluation = settings.evaluation
        # how model-written code runs (the record's `code_execution`): isolated, or unisolated only with the
        # opt-in, which the run's scorers and lm-eval's worker processes read from the environment; refused
        # here otherwise, before any model loads
        self.code_execution = execution_mode(self.evaluation.allow_unsafe_code) if self.sources.runs_code else None
        if self.code_execution == UNSAFE:
            os.environ[UNSAFE_ENV] = "1"
        self.checkpoints = checkpoint_rounds(self.rounds, list(self.evaluation.checkpoints))
        # held-out sets, drawn per seed (common to every allocator): dev decides, eval reports
        self.seeds = {"dev": settings.seed, "eval": self.evaluation.seed}
        self.cache_dir = Path(settings.paths.cache_dir)
        self.device = torch.device("cuda" if settings.trainer.get("accelerator") in ("gpu", "cuda") else "cpu")
        self.open_logger = functools.partial(build_logger, cfg)  # a W&B run opens when the rounds begin
        self.logger: RunLogger | None = None  # opened by prepare_rounds
        self.engine: TeacherEngine | None = None  # the teacher's writer, connected by load_models

    # ------------------------------------------------------------------------- setup

    def setup(self) -> None:
        """Held-out sets, models, reference scores, pilots, and the state of earlier rounds."""
        check_tokenizers(self.models["teacher"], self.models["student"], self.loss)  # before any model loads
        cache = self.models["student"].cache_dir
        for directory in (self.out, self.out / ROUNDS_DIR, cache, cache / "reference") if self.writes else ():
            remove_stale_temporaries(directory)  # what a killed run's atomic writes left
        self.history = completed_rounds(self.out, self.identity)
        self.load_models()
        self.check_models()
        self.score_references()
        self.identify_requirements()
        self.prepare_rounds()

    def load_models(self) -> None:
        """Draw the held-out sets and load (or build) teacher and student onto the run's device."""
        self.dev_sets = self.sources.held_out_sets("dev", self.task_source, self.seeds["dev"])
        self.eval_sets = self.sources.held_out_sets("eval", self.task_source, self.seeds["eval"])
        self.teacher = load_role(self.models["teacher"], self.sources, self.out)  # a served one: its tokenizer
        # only the leading process asks the teacher to write; the others read what it saved
        self.engine = (
            teacher_engine(self.models["teacher"], self.teacher, self.out, self.loss.cache_spec())
            if self.writes
            else None
        )
        self.student = load_role(self.models["student"], self.sources, self.out)
        if self.teacher.model is not None:
            self.teacher.model.eval().requires_grad_(False)
            self.teacher.model.to(self.device)
        self.student.model.to(self.device)  # every proxy of the run on one device: its differences are the reward

    def check_models(self) -> None:
        """What needs the loaded models: a round's slice fits an example; the logits' widths match."""
        check_budget(self.total, self.rounds, {c: self.dev_sets[c] for c in self.names}, self.student.tokenizer)
        if getattr(self.allocator, "warmup", 0) >= self.rounds:
            log.warning(
                "allocator=%s only plays random warm-up candidates: budget.rounds=%d <= allocator.warmup=%d",
                allocator_label(self.allocator),
                self.rounds,
                self.allocator.warmup,
            )
        align_vocab(self.loss, self.teacher, self.student)
        self.settings = replace(self.settings, cache=self.loss.cache_spec())  # over the shared vocabulary
        # a cached run still runs the teacher on a batch holding an example without cached rows
        teacher = self.loss.needs_teacher and not self.loss.cross_tokenizer and self.teacher.model is not None
        for check, on in ((check_linear_head, self.loss.fused_linear), (check_packing, self.settings.pack_length)):
            if on:
                check(self.student.model, "student")
                if teacher:
                    check(self.teacher.model, "teacher")
        if self.settings.cache is not None and teacher:  # the cache reads the teacher's logits at its output embedding
            check_linear_head(self.teacher.model, "teacher", "loss.teacher_source=cache")

    def score_references(self) -> None:
        """Teacher and student base on eval, the teacher's dev responses, and the proxy on them (cached)."""
        t0 = time.time()
        self.reference = reference_scores(
            self.teacher,
            self.teacher_writer(),
            self.student,
            self.sources,
            self.dev_sets,
            self.eval_sets,
            self.seeds,
            world=self.config["capabilities"],
            task_source=self.task_source,
            requirements=self.card,
            cache_dir=self.cache_dir,
            batch=self.batch,
            computes=self.writes,
            dev_probe=self.evaluation.dev_probe and self.sources.suite is None,
        )
        self.responses = self.reference.pop("dev_responses")
        # every dev set: pilots and evaluation checkpoints
        self.proxy = Proxy(self.student.tokenizer, self.dev_sets, self.responses, self.batch)
        self.head_only = self.proxy.decide(self.student.model)  # on the student base, as in the reference scores
        self.setup_probing = time.time() - t0

    def teacher_writer(self) -> Any:
        """What writes the teacher's greedy responses: its in-process model (as before engines), or its engine
        (`prompting.Writer`); None in a process that does not write (it reads the leader's)."""
        return self.teacher.model if self.teacher.model is not None and self.writes else self.engine

    def identify_requirements(self) -> None:
        """The allocator's pilot runs, if it learns the task's requirements (saved: a resumed run reloads them)."""
        self.identification = run_pilots(
            self.allocator,
            self.settings,
            total=self.total,
            teacher=self.teacher,
            engine=self.engine,
            student=self.student,
            loss=self.loss,
            optim=self.optim,
            sources=self.sources,
            proxy=self.proxy,
            base=self.reference["student_base"],
            device=self.device,
            task_source=self.task_source,
            first_seed_index=self.rounds,
            path=self.out / PILOTS_FILE,
            fingerprint=run_fingerprint(self.identity),
            save=self.writes,
        )

    def prepare_rounds(self) -> None:
        """Prompt streams, logger, the training module (resumed if rounds were saved), the allocator's replay of them."""
        out = self.out
        self.streams = {
            c: PromptStream(self.sources.capabilities[c], str(self.seed), self.sources.difficulties) for c in self.names
        }
        spent = sum(sum(e["spent_by_capability"].values()) for e in self.history)
        self.logger = RunLogger(self.open_logger(), spent=spent)
        self.logger.log_baseline(self.reference)  # a resumed run's new W&B run gets its references too
        teacher_model = self.teacher.model if self.loss.needs_teacher else None
        self.module = DistillationModule(
            self.student.model, teacher_model, self.loss, self.optim, self.logger, self.settings.distill.log_every
        )
        if self.history:
            log.info("resuming after round %d of %d from %s", len(self.history), self.rounds, out / ROUNDS_DIR)
            resume_state(out, self.history, self.student, self.module)
        self.replay_history()
        # between checkpoints, only the dev sets a decision reads: the loop stays lean
        signals = self.allocator.signals(self.requirements)
        self.read = {n for n in signals if n != TASK}
        self.read |= task_sets(self.sources, self.task_source) if TASK in signals else set()
        self.decision_proxy = Proxy(
            self.student.tokenizer,
            {n: self.dev_sets[n] for n in self.read},
            {n: self.responses[n] for n in self.read},
            self.batch,
            self.head_only,
        )

    def context(self, index: int, history: list[dict[str, Any]]) -> RoundContext:
        """What the allocator sees before round `index`: dev signals and the decision views of earlier rounds."""
        before = history[index - 1] if index else self.reference["student_base"]
        return RoundContext(
            round=index,
            rounds=self.rounds,
            capabilities=self.names,
            requirements=self.requirements,
            probe_loglik=dict(before.get("probe_loglik", {})),
            task_loglik=before.get("task_loglik"),
            total_tokens=self.total,
            spent_tokens=sum(sum(e["spent_by_capability"].values()) for e in history),
            history=[decision_view(e) for e in history],
        )

    def replay_history(self) -> None:
        """Feed a resumed run's completed rounds to the allocator, as if it had just run them."""
        for index, entry in enumerate(self.history):
            context = self.context(index, self.history[:index])
            self.allocator.decide(context)
            self.allocator.update(context, entry["allocation"], decision_view(entry))

    # ------------------------------------------------------------------------- one round

    def run_round(self, index: int) -> None:
        """One round of ReAD's loop, each step timed: allocate, generate, train, measure (and evaluate at a
        checkpoint), then record the round once the allocator has learnt from it."""
        context = self.context(index, self.history)
        laps: dict[str, float] = {}
        with timed(laps, "allocator_s"):
            plan = self.allocate(index, context)
        with timed(laps, "generation_s"):
            slices = self.generate(index, plan)
        with timed(laps, "training_s"):
            fit = self.train(index, context, slices)
        with timed(laps, "proxy_s"):
            signals = self.measure(index)
        with timed(laps, "eval_s"):
            scores = self.evaluate(index)
        with timed(laps, "allocator_s"):  # the allocator learns from the round's entry
            entry = self.entry(index, plan, slices, fit, signals, scores)
            entry.update = self.allocator.update(context, plan.allocation, decision_view(entry.to_json()))
        entry.timing = {**laps, "probing_s": laps["proxy_s"] + laps["eval_s"]}
        self.record(index, entry)

    def allocate(self, index: int, context: RoundContext) -> RoundPlan:
        """The allocator's split of the round's slice of the budget (replay added), and where each capability's
        prompts resume."""
        decided = self.allocator.decide(context)
        allocation = normalize_weights(decided.split, self.names)  # what the allocator learns from: its own split
        allotted = round_slice(self.total, context.spent_tokens, self.rounds - index)
        return RoundPlan(
            decided=decided,
            allocation=allocation,
            allotted=allotted,
            shares=split_tokens(allotted, with_replay(allocation, self.replay)),
            cursors={
                c: sum(e.get("prompts_by_capability", e["examples_by_capability"])[c] for e in self.history)
                for c in self.names
            },
            mix=self.settings.distill.curriculum.mix(context.spent_tokens / self.total),  # the difficulty mix, if any
        )

    def generate(self, index: int, plan: RoundPlan) -> list[Slice]:
        """The teacher's responses for each capability's share (saved before training, so a kill reuses them)."""
        key = {"fingerprint": run_fingerprint(self.identity), "shares": plan.shares, "cursors": plan.cursors}
        slices = load_supervision(self.out, index, key)  # written before a kill during training: reused
        if slices is None and not self.writes:  # the leading process writes the round's supervision: train on it,
            # whatever this process's own probes decided (another GPU's numerics), so every rank has its batches
            read = lambda: load_supervision(self.out, index, key, match=("fingerprint",))  # noqa: E731
            slices = wait_for(read, f"round {index + 1}'s supervision")
        if slices is None:
            streams = {c: stream.mixed(plan.mix) for c, stream in self.streams.items()}
            slices = generate_round(
                self.settings, plan.shares, streams, plan.cursors, self.engine, self.student, self.device
            )
            save_supervision(self.out, index, slices, key)
        return slices

    def train(self, index: int, context: RoundContext, slices: list[Slice]) -> tuple[int, int, list[float]]:
        """Fit the student on the round's supervision: (optimizer steps, tokens processed, losses)."""
        spent = sum(s.spent for s in slices)
        progress = (context.spent_tokens / self.total, (context.spent_tokens + spent) / self.total)
        offset = sum(e["train_steps"] for e in self.history)
        return train_round(self.settings, index, slices, self.module, self.teacher, self.student, progress, offset)

    def measure(self, index: int) -> dict[str, Any]:
        """The dev proxy: every signal at an evaluation checkpoint, else those a decision reads (if any)."""
        self.student.model.to(self.device)
        checkpoint = index in self.checkpoints
        if not checkpoint and not self.read:
            return {}
        proxy = self.proxy if checkpoint else self.decision_proxy
        return proxy_scores(proxy, self.student.model, self.sources, self.task_source)

    def evaluate(self, index: int) -> dict[str, Any]:
        """Exact match on the eval sets at an evaluation checkpoint (reports only); nothing between them."""
        if index not in self.checkpoints:
            return {}
        student = self.student
        return exact_match(
            student.model,
            student.tokenizer,
            self.sources,
            self.eval_sets,
            self.task_source,
            self.batch,
            progress=self.settings.progress,
        )

    def entry(
        self,
        index: int,
        plan: RoundPlan,
        slices: list[Slice],
        fit: tuple[int, int, list[float]],
        signals: dict[str, Any],
        scores: dict[str, Any],
    ) -> RoundEntry:
        """The round's record entry: what was decided, spent, trained and measured."""
        steps, trained, losses = fit
        names, by_slice = self.names, {s.capability: s for s in slices}
        return RoundEntry(
            round=index,
            allocation=plan.allocation,
            allotted_tokens=plan.allotted,
            allotted_by_capability=plan.shares,
            spent_by_capability={c: by_slice[c].spent if c in by_slice else 0 for c in names},
            examples_by_capability={c: len(by_slice[c].examples) if c in by_slice else 0 for c in names},
            prompts_by_capability={c: by_slice[c].prompts if c in by_slice else 0 for c in names},
            truncated_examples=sum(e.truncated for s in slices for e in s.examples),
            shortfall_tokens=plan.allotted - sum(s.spent for s in slices),
            teacher_generated_tokens=sum(s.generated_tokens for s in slices),
            student_trained_tokens=trained,
            train_steps=steps,
            train_loss={"first": losses[0], "last": losses[-1]} if losses else None,
            teacher_cache=(
                cache_summary([e.teacher for s in slices for e in s.examples]) if self.settings.cache else None
            ),
            difficulty_mix=None if plan.mix is None else list(plan.mix),
            signals=signals,
            scores=scores,
            decision=plan.decided.decision,
        )

    def record(self, index: int, entry: RoundEntry) -> None:
        """Save the round (the leading process), append it to the history, log it and print its line."""
        saved = entry.to_json()
        if self.writes:
            save_round(self.out, index, self.student, self.module, saved, self.identity)
        self.history.append(saved)
        self.logger.log_round(saved, sum(e["train_steps"] for e in self.history))
        log.info(round_line(index, self.rounds, saved, self.history, self.reference, self.total))

    # ------------------------------------------------------------------------- the record

    def finish(self) -> dict[str, Any]:
        """Score the final student (dev, and lm-eval on eval) and write the record atomically."""
        if not any(sum(e["spent_by_capability"].values()) for e in self.history):
            raise CapdistillError(
                f"the run spent none of its {self.total} tokens: every capability's share of a round was smaller than "
                "its shortest response; raise budget.total_tokens or lower budget.rounds (no record written)"
            )
        final_dev = dev_scores(
            self.student, self.sources, self.dev_sets, self.task_source, self.batch, self.evaluation.dev_probe
        )
        lmeval = None
        if self.evaluation.lmeval and self.writes:  # it needs no other rank: the leading process alone
            lmeval = final_lmeval(
                self.student,
                self.sources,
                self.eval_sets,
                self.task_source,
                self.out / LMEVAL_DIR,
                batch=self.evaluation.batch_size,
                limit=self.evaluation.limit,
            )
        history = self.history
        spent = {c: sum(e["spent_by_capability"][c] for e in history) for c in self.names}
        wall = time.time() - self.start
        keys = ("allocator_s", "generation_s", "training_s", "proxy_s", "eval_s", "probing_s")
        timing = {k: sum(e["timing"][k] for e in history) for k in keys}
        timing["reference_s"] = self.setup_probing
        timing["probing_s"] += self.setup_probing
        timing["decision_s"] = timing["allocator_s"] + timing["proxy_s"]  # what deciding costs per run
        timing["decision_fraction"] = timing["decision_s"] / wall
        last = history[-1]
        record = Record(
            config=self.config,
            seed=self.seed,
            version=capdistill.__version__,
            experiment=self.experiment,
            allocator=allocator_label(self.allocator),
            loss=loss_label(self.loss),
            task=self.task_name,
            budget={
                "total_tokens": self.total,
                "rounds": self.rounds,
                "spent_tokens": sum(spent.values()),
                "spent_by_capability": spent,
                "shortfall_tokens": self.total - sum(spent.values()),
                "teacher_generated_tokens": sum(e["teacher_generated_tokens"] for e in history),
                "student_trained_tokens": sum(e["student_trained_tokens"] for e in history),
            },
            rounds=history,
            final={
                **{k: last[k] for k in ("probe", "task_utility", "n", "probe_loglik", "task_loglik")},
                "splits": SPLITS,
            },
            reference=self.reference,
            identification=self.identification,
            timing={**timing, "total_s": wall},
            final_dev=final_dev,
            fingerprint=run_fingerprint(self.identity),
            lmeval=lmeval,
            teacher_cache=merge_summaries([e["teacher_cache"] for e in history]) if self.settings.cache else None,
            code_execution=self.code_execution,
        ).to_json()
        if self.writes:
            atomic_write_json(self.out / RECORD_FILE, record)
        self.logger.log_final(record)
        return record


def checkpoint_rounds(rounds: int, fractions: list[float]) -> set[int]:
    """Rounds (0-based) after which the eval sets are scored: the first round reaching each fraction
    of the budget's rounds, and the last round."""
    return {max(math.ceil(round(f * rounds, 9)) - 1, 0) for f in fractions} | {rounds - 1}


def dev_scores(
    student: LoadedModel,
    sources: WorldSources,
    dev_sets: dict[str, list[Example]],
    task_source: str,
    batch: int,
    every_capability: bool = False,
) -> dict[str, Any] | None:
    """The final student's task exact match on the dev split: what chooses among runs (grid's split)
    without reading eval. Only the sets the task's score needs are generated, and with `every_capability`
    every capability's too (`probe`: the transfer statistics on dev). A benchmark suite is scored by lm-eval
    on its own evaluation docs, so it has none (None)."""
    if sources.suite is not None:
        return None
    scores = dev_exact_match(student, sources, dev_sets, batch, task_source, every_capability)
    out = {"split": "dev", "task_utility": scores["task_utility"], "n": scores["n"]["task"]}
    if every_capability:
        out["probe"] = scores["probe"]
    return out


def final_lmeval(
    student: LoadedModel,
    sources: WorldSources,
    eval_sets: dict[str, list[Example]],
    task_source: str,
    export_dir: Path,
    *,
    batch: int,
    limit: int | None,
) -> dict[str, Any]:
    """The final student scored through lm-eval: the exported eval sets (kept in `export_dir` to
    re-score it later), or a benchmark suite's tasks on `limit` items (all by default)."""
    t0 = time.time()
    model, tokenizer = student.model, student.tokenizer
    if sources.suite is None:
        scores = lmeval_scores(model, tokenizer, sources, eval_sets, task_source, export_dir, batch)
    else:
        chat = uses_chat_template(tokenizer)
        suite = sources.suite.score(hf_lm(model, tokenizer, batch, chat), limit, chat, capped=False)
        utility = suite_utility(suite["probe"], sources, task_source)
        scores = {"probe": suite["probe"], "task_utility": utility, "tasks": suite["benchmarks"]}
    scores["timing_s"] = time.time() - t0
    log.info("lm-eval: task utility %.1f, probe %s", scores["task_utility"], scores["probe"])
    return scores
