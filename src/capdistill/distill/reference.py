"""A run's reference scores, cached per (teacher, student base, world, task, held-out draws).

The teacher and the student base are scored on the eval sets (the reference lines of every
figure), the teacher answers the dev prompts greedily (the proxy's targets), and the
student base's proxy on them is where the allocator starts. Every allocator and budget of
a sweep shares them, so they are computed once and read from `<cache>/reference/`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from capdistill.capabilities import Example
from capdistill.capabilities.sources import WorldSources
from capdistill.distill.follow import wait_for
from capdistill.evaluation.proxy import Proxy
from capdistill.evaluation.scores import exact_match, task_score, task_sets, teacher_responses
from capdistill.io import atomic_write_json
from capdistill.models.request import LoadedModel

VERSION = 2  # bump when what is cached changes
# the split each reference number comes from
SPLITS = {"probe": "eval", "task_utility": "eval", "n": "eval", "probe_loglik": "dev", "task_loglik": "dev"}


def model_id(model: LoadedModel) -> str:
    """What identifies a model and what it is fed: a world build's hash, or an HF path, its
    initialisation and how it is loaded (dtype, attention, chat template: the prompts' text)."""
    if model.info.get("hash"):
        return model.path.name
    return json.dumps({k: model.info.get(k) for k in ("path", "init", "loading")}, sort_keys=True, default=str)


def proxy_scores(proxy: Proxy, model: Any, sources: WorldSources, task_source: str) -> dict[str, Any]:
    """The dev signal of `model`: `probe_loglik` per capability the proxy covers, and `task_loglik`."""
    per_set = proxy(model)
    out: dict[str, Any] = {"probe_loglik": {c: per_set[c] for c in sources.capabilities if c in per_set}}
    if task_sets(sources, task_source) <= per_set.keys():
        out["task_loglik"] = task_score(per_set, sources, task_source)
    return out


def reference_scores(
    teacher: LoadedModel,
    writer: Any,
    student: LoadedModel,
    sources: WorldSources,
    dev_sets: dict[str, list[Example]],
    eval_sets: dict[str, list[Example]],
    seeds: dict[str, int],
    *,
    world: dict[str, Any],
    task_source: str,
    requirements: dict[str, float],
    cache_dir: Path,
    batch: int,
    computes: bool = True,
    dev_probe: bool = False,
) -> dict[str, Any]:
    """`teacher` and `student_base` scores (eval exact match; the student base's dev proxy too) and
    the teacher's greedy `dev_responses`, from the cache when this pair and these draws were scored.

    The teacher writes through `writer`: its in-process model, or its engine (a `prompting.Writer`). A
    process that does not compute them (`computes` off: it trains along) waits for the leader's.
    `world` (the `capabilities` config), `task_source` and `requirements` are part of the cache key.
    `dev_probe` adds the student base's exact match on every capability's dev set (`dev_probe`)."""
    weight = next(student.model.parameters())
    key = {
        "teacher": model_id(teacher),
        "student": model_id(student),
        "world": world,
        "task": task_source,
        "requirements": dict(requirements),  # a WEIGHTED task's utility depends on them
        "seeds": seeds,
        # the proxy's values depend on where and in what precision the student runs: a reward
        # differences them against in-run proxies, so a cache from another device must not serve
        "student_on": [weight.device.type, str(weight.dtype)],
        "version": VERSION,
        **({"dev_probe": True} if dev_probe else {}),  # caches scored without it keep their key
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = Path(cache_dir) / "reference" / f"{digest}.json"
    if not computes:
        wait_for(lambda: path.is_file() or None, "the reference scores")
    if path.is_file():
        return {**json.loads(path.read_text()), "splits": SPLITS}
    task = task_source
    responses = teacher_responses(writer, teacher.tokenizer, sources, dev_sets, batch)
    base = exact_match(student.model, student.tokenizer, sources, eval_sets, task, batch)
    base.update(proxy_scores(Proxy(student.tokenizer, dev_sets, responses, batch), student.model, sources, task))
    if dev_probe:
        base["dev_probe"] = dev_exact_match(student, sources, dev_sets, batch, every_capability=True)["probe"]
    scores = {
        "teacher": exact_match(writer, teacher.tokenizer, sources, eval_sets, task, batch),
        "student_base": base,
        "dev_responses": responses,
        "key": key,
    }
    atomic_write_json(path, scores)
    return {**scores, "splits": SPLITS}


def dev_exact_match(
    student: LoadedModel,
    sources: WorldSources,
    dev_sets: dict[str, list[Example]],
    batch: int,
    task_source: str | None = None,
    every_capability: bool = False,
) -> dict[str, Any]:
    """`exact_match` of `student` on the dev sets that `task_source`'s score needs (none without one) and, with
    `every_capability`, on every capability's; only these are generated."""
    names = task_sets(sources, task_source) if task_source is not None else set()
    names |= set(sources.capabilities) if every_capability else set()
    sets = {n: s for n, s in dev_sets.items() if n in names}
    task = task_source if task_source is not None else next(iter(sets))  # no task: any set's utility, unread
    return exact_match(student.model, student.tokenizer, sources, sets, task, batch)
