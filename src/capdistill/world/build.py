"""Build or reuse the world's teacher and student base: trained with Lightning, cached by config hash.

A cache entry is a directory `<role>-<name>-<hash>` holding an HF model (safetensors),
its tokenizer and `build.json` (hash, config, scores). It is written under a temporary
name and renamed into place, so a killed build never leaves an entry that loads.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, IterableDataset
from transformers import AutoTokenizer, LlamaForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

import capdistill
from capdistill.capabilities.lexicon import all_words
from capdistill.capabilities.sources import BUILD_PROBE_SIZE, BUILD_TASK_SIZE, WorldSources
from capdistill.errors import CapdistillError
from capdistill.evaluation.probes import probe_accuracy
from capdistill.evaluation.scores import teacher_responses
from capdistill.io import atomic_dir, changed_files, checksums, remove_stale_temporaries
from capdistill.models.llama import build_llama
from capdistill.models.request import LoadedModel, ModelRequest
from capdistill.models.tokenizers import train_tokenizer
from capdistill.training.lm_module import CausalLMModule
from capdistill.training.streams import BatchStream, StagedStream

log = logging.getLogger(__name__)
BUILD_FILE = "build.json"
FORMAT_VERSION = 3  # bump when the build procedure changes what a config produces
CHECK_SIZE = 16  # probes per capability whose exact scores are recorded for reproduction checks
# the model config fields a synthetic build depends on (the rest describe loading HF models)
SYNTHETIC_KEYS = ("name", "tokenizer", "vocab_size", "arch", "train", "seed")


def build_spec(request: ModelRequest) -> dict[str, Any]:
    """Everything that determines what a build of the role produces (and nothing else). The model part keeps
    the keys (and the `kind`) it had when the config was a `kind`-chosen union, so shipped builds still match."""
    model = json.loads(json.dumps(asdict(request.model)))  # enums as their values, as in the config
    return {
        "format": FORMAT_VERSION,
        "role": request.role,
        "world": request.world,
        "capabilities": list(request.capabilities),
        "model": {"kind": request.model.KIND} | {k: v for k, v in model.items() if k in SYNTHETIC_KEYS},
    }


def spec_hash(spec: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def entry_name(request: ModelRequest) -> str:
    return f"{request.role}-{request.model.name}-{spec_hash(build_spec(request))}"


def find_entry(request: ModelRequest) -> Path | None:
    """A complete cached or shipped build for this request, if one exists."""
    name = entry_name(request)
    for base in (request.cache_dir, request.assets_dir):
        path = Path(base) / name
        if (path / BUILD_FILE).is_file():
            return path
    return None


def load_entry(path: Path) -> LoadedModel:
    """A cache entry, checked: its weights match the checksums stored when it was written (entries from before
    checksums: they load), and every weight is finite. A damaged entry is a one-line error with the remedy."""
    remedy = "delete it, or rebuild it with rebuild=true"
    try:
        info = json.loads((path / BUILD_FILE).read_text())
    except (OSError, ValueError) as err:
        raise CapdistillError(f"cache entry {path} is damaged ({BUILD_FILE}: {type(err).__name__}): {remedy}") from None
    changed = changed_files(path, info.get("checksums", {}))
    if changed:
        raise CapdistillError(f"cache entry {path} is damaged ({changed[0]} does not match its checksum): {remedy}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = LlamaForCausalLM.from_pretrained(path)
    except Exception as err:  # unreadable weights or tokenizer files (safetensors, tokenizers: their own types)
        raise CapdistillError(f"cache entry {path} is damaged ({type(err).__name__}): {remedy}") from None
    if not all(torch.isfinite(p).all() for p in model.parameters()):
        raise CapdistillError(f"cache entry {path} holds non-finite weights: {remedy}")
    model.eval()
    return LoadedModel(model, tokenizer, path, info)


def world_tokenizer(sources: WorldSources, kind: str, vocab_size: int) -> PreTrainedTokenizerBase:
    """Train the world's tokenizer on a fixed sample of every source (deterministic)."""
    corpus = [
        f"{e.prompt} => {e.response}"
        for name in sorted(sources.all_sources)
        for e in sources.all_sources[name].sample("train", 400, 0, sources.difficulties, unique=False)
    ]
    corpus.append(" ".join(all_words()))
    return train_tokenizer(kind, corpus, vocab_size)


def score_model(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, sources: WorldSources, batch_size: int
) -> dict[str, dict[str, Any]]:
    """Probe accuracy per capability, eval accuracy per composite task, the exact check subset,
    and the greedy probe responses (a teacher's are the log-likelihood proxy's targets)."""
    probe, check, responses = {}, {}, {}
    for name, examples in sources.build_probes.items():
        source = sources.capabilities[name]
        probe[name], responses[name] = probe_accuracy(model, tokenizer, source, examples, batch_size)
        hits = sum(source.check(e, p) for e, p in zip(examples[:CHECK_SIZE], responses[name]))
        check[name] = 100.0 * hits / CHECK_SIZE
    task = {
        name: probe_accuracy(model, tokenizer, sources.composites[name], examples, batch_size)[0]
        for name, examples in sources.build_task_sets.items()
    }
    return {"probe": probe, "task": task, "check": check, "responses": responses}


def reference_responses(teacher: LoadedModel, sources: WorldSources, batch_size: int) -> dict[str, list[str]]:
    """The teacher's greedy probe responses: recorded at build time, regenerated for older entries."""
    recorded = teacher.info.get("scores", {}).get("responses")
    probes = sources.build_probes
    if recorded and all(len(recorded.get(n, ())) == len(ex) for n, ex in probes.items()):
        return {n: recorded[n] for n in probes}
    return teacher_responses(teacher.model, teacher.tokenizer, sources, probes, batch_size)


class DevProbeStopping(pl.Callback):
    """Every `every` steps, score the dev split of every source; stop once all reach `target`."""

    def __init__(
        self,
        sources: WorldSources,
        tokenizer: PreTrainedTokenizerBase,
        size: int,
        every: int,
        target: float | None,
    ) -> None:
        self.dev = sources.dev_sets(size)
        self.sources, self.tokenizer, self.every, self.target = sources.all_sources, tokenizer, every, target
        self.history: list[dict[str, Any]] = []

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step % self.every and step != trainer.max_steps:
            return
        scores = {
            n: probe_accuracy(pl_module.model, self.tokenizer, self.sources[n], ex)[0] for n, ex in self.dev.items()
        }
        worst = min(scores, key=scores.get)
        loss = trainer.callback_metrics.get("train/loss")
        self.history.append({"step": step, "dev": scores})
        log.info(
            "step %d loss %.3f dev min %.0f (%s) mean %.1f",
            step,
            float(loss) if loss is not None else float("nan"),
            scores[worst],
            worst,
            sum(scores.values()) / len(scores),
        )
        pl_module.log_dict({f"dev/{n}": v for n, v in scores.items()})
        if self.target is not None and scores[worst] >= self.target:
            trainer.should_stop = True


def train_model(
    request: ModelRequest, sources: WorldSources, output_dir: Path
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, dict[str, Any]]:
    """Train the role's model from scratch on the world's train splits with Lightning."""
    spec = request.model
    train = spec.train
    pl.seed_everything(spec.seed, workers=True, verbose=False)
    tokenizer = world_tokenizer(sources, spec.tokenizer.value, spec.vocab_size)
    model = build_llama(asdict(spec.arch), tokenizer, spec.seed)
    weights = {n: float(train.mix.get(n, 1.0)) for n in sources.all_sources}

    def batches(weights: dict[str, float]) -> BatchStream:
        return BatchStream(
            sources.all_sources, weights, sources.difficulties, tokenizer, spec.seed, train.batch_size, train.bucket
        )

    stream: IterableDataset = batches(weights)
    if train.curriculum_steps:
        first = {n: float(train.curriculum_mix.get(n, 0.0)) for n in sources.all_sources}
        stream = StagedStream([(batches(first), train.curriculum_steps), (stream, 0)])
    stage = (train.curriculum_steps, (train.curriculum_lr or train.lr) / train.lr)
    module = CausalLMModule(
        model, train.lr, train.weight_decay, train.warmup_steps, train.max_steps, train.min_lr_ratio, stage
    )
    stopper = DevProbeStopping(sources, tokenizer, train.dev_size, train.eval_every, train.target)
    trainer = pl.Trainer(
        accelerator=request.accelerator,
        devices=1,
        precision=request.precision,
        max_steps=train.max_steps,
        max_time={"minutes": train.max_minutes} if train.max_minutes else None,
        gradient_clip_val=train.grad_clip,
        callbacks=[stopper],
        logger=pl.loggers.CSVLogger(output_dir, name=f"build-{request.role}"),
        log_every_n_steps=max(1, min(50, train.max_steps)),  # a short build logs too: no empty version_0/
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic=True,
    )
    start = time.time()
    if train.max_steps > 0:
        trainer.fit(module, DataLoader(stream, batch_size=None))
    model = module.model.cpu().eval()
    stats = {"steps": trainer.global_step, "train_seconds": time.time() - start, "dev_history": stopper.history}
    return model, tokenizer, stats


def save_entry(
    path: Path, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, info: dict[str, Any], replace: bool = False
) -> None:
    """Write a cache entry atomically (see `atomic_dir`): a killed build leaves no entry that loads."""
    with atomic_dir(path, replace=replace) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        info = {**info, "checksums": checksums(tmp)}
        (tmp / BUILD_FILE).write_text(json.dumps(info, indent=2))


def ensure_model(request: ModelRequest, sources: WorldSources, output_dir: Path) -> LoadedModel:
    """Load the cached (or shipped) build for this request, or build and cache it."""
    role = request.role
    remove_stale_temporaries(request.cache_dir)  # builds a killed run left half-written
    found = None if request.rebuild else find_entry(request)
    if found is not None:
        log.info("%s: using %s", role, found)
        return load_entry(found)
    log.info("%s: building %s", role, entry_name(request))
    model, tokenizer, stats = train_model(request, sources, output_dir)
    spec = build_spec(request)
    info = {
        "hash": spec_hash(spec),
        "version": capdistill.__version__,
        "spec": spec,
        "probe_size": BUILD_PROBE_SIZE,
        "eval_size": BUILD_TASK_SIZE,
        "scores": score_model(model, tokenizer, sources, request.probe_batch_size),
        "params": sum(p.numel() for p in model.parameters()),
        "torch": torch.__version__,
        **stats,
    }
    path = Path(request.cache_dir) / entry_name(request)
    save_entry(path, model, tokenizer, info, replace=request.rebuild)
    return load_entry(path)
