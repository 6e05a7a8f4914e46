"""A run's teacher and student: loaded (or built, for the synthetic world), and checked against the loss."""

from __future__ import annotations

import functools
import logging
from dataclasses import asdict
from pathlib import Path

from transformers import GenerationConfig, PreTrainedTokenizerBase

from capdistill.capabilities import Example
from capdistill.capabilities.sources import WorldSources
from capdistill.components import loss_label
from capdistill.config.model_specs import Engine, HFModel, SyntheticModel
from capdistill.errors import CapdistillError
from capdistill.losses import DistillLoss
from capdistill.losses.sparse import CacheSpec
from capdistill.models.hf import checkpoint_shape, load_model, load_tokenizer, resolve_path
from capdistill.models.request import LoadedModel, ModelRequest
from capdistill.prompting import response_ids
from capdistill.supervision.engines import HFEngine, TeacherEngine
from capdistill.supervision.openai_server import ServerEngine, launch
from capdistill.supervision.vllm_offline import VllmEngine
from capdistill.world.build import ensure_model

log = logging.getLogger(__name__)
SERVER_LOG = "teacher-server.log"  # a launched teacher server's output, in the run's directory


def load_role(request: ModelRequest, sources: WorldSources, output_dir: Path) -> LoadedModel:
    """The teacher or student: the synthetic world's build (built on demand), or an HF model."""
    spec, role, cache = request.model, request.role, request.cache_dir
    if isinstance(spec, SyntheticModel):
        return ensure_model(request, sources, output_dir)
    tokenizer = load_tokenizer(spec, role, cache)
    served = spec.engine is not Engine.hf  # the teacher's weights stay with its engine
    model = None if served else load_model(spec, role, cache, tokenizer)
    init = asdict(spec.init)
    if spec.init.scratch:
        init["arch"] = asdict(spec.arch)
        init["seed"] = spec.seed
    loading = {"dtype": spec.dtype.value, "attn_implementation": spec.attn_implementation}
    loading["chat_template"] = spec.chat_template
    if served:  # an engine writes in its own numerics (`hf` runs keep the key they always had)
        loading["engine"] = spec.engine.value
    info = {"name": spec.name, "path": spec.path, "init": init, "loading": loading}
    return LoadedModel(model, tokenizer, Path(resolve_path(spec.path, role, cache)), info)


def teacher_engine(
    request: ModelRequest, teacher: LoadedModel, output_dir: Path, cache: CacheSpec | None
) -> TeacherEngine:
    """The engine the teacher writes through (`teacher.engine`): its in-process model, vLLM in this process, or a
    server, reached at `teacher.server.url` or started from `teacher.server.launch` (and checked: it answers,
    serves the teacher, tokenizes as its tokenizer, and gives the top-k the cache needs)."""
    spec = request.model
    if not isinstance(spec, HFModel) or spec.engine is Engine.hf:
        return HFEngine(teacher.model, teacher.tokenizer)
    vocab, defaults = logits_width(teacher), generation_config(teacher.path)
    if spec.engine is Engine.vllm:
        return VllmEngine(
            str(teacher.path),
            teacher.tokenizer,
            vocab,
            dtype=spec.dtype.value,
            tensor_parallel_size=spec.vllm.tensor_parallel_size,
            gpu_memory_utilization=spec.vllm.gpu_memory_utilization,
            max_logprobs=spec.vllm.max_logprobs or (cache.size if cache else None),
            max_model_len=spec.vllm.max_model_len,
            seed=spec.seed,
            generation_config=defaults,
        )
    server, name, process, relaunch = spec.server, spec.server.model or spec.name, None, None
    url = server.url
    if url is None:
        relaunch = functools.partial(
            launch,
            server.launch,
            model=str(teacher.path),
            name=name,
            log_path=output_dir / SERVER_LOG,
            startup_timeout_s=server.startup_timeout_s,
        )
        process = relaunch()
        url = process.url
    engine = ServerEngine(
        url,
        name,
        teacher.tokenizer,
        vocab,
        concurrency=server.concurrency,
        timeout_s=server.timeout_s,
        retries=server.retries,
        process=process,
        relaunch=relaunch,
        restarts=server.restarts,
        generation_config=defaults,
    )
    engine.connect(cache)
    return engine


def generation_config(path: Path) -> GenerationConfig:
    """The teacher checkpoint's generation config, as in-process generate reads it (its defaults where it has none)."""
    try:
        return GenerationConfig.from_pretrained(path)
    except OSError:
        return GenerationConfig()


def same_tokenizer(a: PreTrainedTokenizerBase, b: PreTrainedTokenizerBase) -> bool:
    return a.get_vocab() == b.get_vocab()


def check_tokenizers(teacher: ModelRequest, student: ModelRequest, loss: DistillLoss) -> None:
    """A same-tokenizer loss across different tokenizers fails here, before any model is loaded."""
    if not loss.needs_teacher or loss.cross_tokenizer:
        return
    t, s = teacher.model, student.model
    if isinstance(t, SyntheticModel) and isinstance(s, SyntheticModel):
        same = (t.tokenizer, t.vocab_size) == (s.tokenizer, s.vocab_size)
    elif isinstance(t, HFModel) and isinstance(s, HFModel):
        cache = student.cache_dir
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


def align_vocab(loss: DistillLoss, teacher: LoadedModel, student: LoadedModel) -> None:
    """Same tokenizer, differently padded logits (e.g. Qwen2.5-7B 152064 vs 0.5B 151936): slice to the tokenizer."""
    if not loss.needs_teacher or loss.cross_tokenizer or getattr(loss, "vocab_size", 0) is not None:
        return
    widths = {logits_width(m) for m in (teacher, student)}
    if len(widths) > 1:
        loss.vocab_size = len(student.tokenizer)
        log.info("teacher and student logits differ in width %s; comparing the first %d", widths, loss.vocab_size)


def logits_width(loaded: LoadedModel) -> int:
    """How many logits the model gives per position: its output embedding's rows, or a served teacher's
    checkpoint's `vocab_size` (its tokenizer's length where the checkpoint does not say)."""
    if loaded.model is not None:
        return loaded.model.get_output_embeddings().weight.shape[0]
    return (checkpoint_shape(str(loaded.path)) or {}).get("vocab_size") or len(loaded.tokenizer)


def check_budget(total: int, rounds: int, sets: dict[str, list[Example]], tokenizer: PreTrainedTokenizerBase) -> None:
    """A round's slice must fit at least the shortest reference response of some capability (`sets`:
    the capabilities' dev sets)."""
    shortest = min(len(response_ids(tokenizer, e.response)) for examples in sets.values() for e in examples)
    if total // rounds < shortest:
        raise CapdistillError(
            f"budget.total_tokens={total} over {rounds} rounds gives {total // rounds} tokens per round, "
            f"smaller than one example ({shortest} tokens); raise the budget or lower budget.rounds"
        )
