"""Pilot runs for requirement identification (ReAD's intervention data), run before round 0.

Each pilot distils a copy of the student base on one of the allocator's sparse splits for
`pilot_fraction` of the budget (a fresh optimizer, its own prompt streams), then measures
every capability's and the task's dev proxy; their changes are the interventions the
allocator fits its requirement vector to (dev only: nothing here reads eval). The student
is put back to its base weights after every pilot. Pilot tokens are spent outside the
budget and recorded under `identification` in the record; the results are saved
atomically, so a resumed run fits the same requirements without redoing the pilots.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import torch

from capdistill.allocation import Allocator
from capdistill.allocation.requirements import Intervention
from capdistill.capabilities.sources import WorldSources
from capdistill.distill.follow import wait_for
from capdistill.distill.module import DistillationModule
from capdistill.distill.reference import proxy_scores
from capdistill.distill.resume import PILOT_SUPERVISION_FILE, ROUNDS_DIR, load_supervision, save_supervision
from capdistill.distill.rounds import RoundSettings, generate_round, train_round
from capdistill.evaluation.proxy import Proxy
from capdistill.io import atomic_write_json
from capdistill.losses import DistillLoss
from capdistill.models.request import LoadedModel
from capdistill.supervision.budget import split_tokens
from capdistill.supervision.engines import TeacherEngine
from capdistill.supervision.slices import PromptStream
from capdistill.training.optim import OptimizerSettings, Scope

log = logging.getLogger(__name__)

PILOTS_FILE = "identification.json"


def saved_pilots(path: Path, fingerprint: str) -> dict[str, Any] | None:
    """This run's saved pilots, if they are written."""
    saved = json.loads(path.read_text()) if path.is_file() else None
    return saved if saved is not None and saved["fingerprint"] == fingerprint else None


def run_pilots(
    allocator: Allocator,
    settings: RoundSettings,
    *,
    total: int,
    teacher: LoadedModel,
    engine: TeacherEngine | None,
    student: LoadedModel,
    loss: DistillLoss,
    optim: OptimizerSettings,
    sources: WorldSources,
    proxy: Proxy,
    base: dict[str, Any],
    device: torch.device,
    task_source: str,
    first_seed_index: int,
    path: Path,
    fingerprint: str,
    save: bool = True,
) -> dict[str, Any] | None:
    """Run the allocator's pilots (or load a previous run's from `path`), let it identify the task's
    requirements, and save them at `path` (unless `save` is off: a process that does not write, which
    trains along on the supervision the leading process's `engine` wrote for each pilot).

    Returns what goes into the record's `identification`, or None if the allocator runs no pilots.
    """
    splits = allocator.pilot_splits()
    if not splits:
        return None
    saved = saved_pilots(path, fingerprint)
    if saved is not None:
        interventions = [Intervention.from_json(i) for i in saved["interventions"]]
        tokens = saved["tokens_per_pilot"]
    else:
        tokens = max(1, round(allocator.pilot_fraction * total))
        fresh = dataclasses.replace(optim, scope=Scope.round)

        def pilot(index: int, split: dict[str, float]) -> Intervention:
            """One pilot from the student base; the student's weights are restored afterwards."""
            weights = copy.deepcopy(student.model.state_dict())
            seed_index = first_seed_index + index  # distinct from every real round's shuffling seed
            mix = settings.distill.curriculum.mix(0.0)  # a pilot trains the student base: the curriculum's first mix
            streams = {
                c: PromptStream(sources.capabilities[c], f"{settings.seed}/pilot{index}", sources.difficulties).mixed(
                    mix
                )
                for c in split
            }
            try:
                key = {"fingerprint": fingerprint, "pilot": index, "split": split, "tokens": tokens}
                out = path.parent
                if save:
                    slices = generate_round(settings, split_tokens(tokens, split), streams, {}, engine, student, device)
                    save_supervision(out, index, slices, key, PILOT_SUPERVISION_FILE)
                else:  # the leading process writes it; this one trains along on it
                    read = lambda: load_supervision(out, index, key, PILOT_SUPERVISION_FILE)  # noqa: E731
                    slices = wait_for(read, f"pilot {index + 1}'s supervision")
                module = DistillationModule(student.model, teacher.model if loss.needs_teacher else None, loss, fresh)
                train_round(settings, seed_index, slices, module, teacher, student, (0.0, 1.0), 0)
                student.model.to(device)
                after = proxy_scores(proxy, student.model, sources, task_source)
            finally:
                student.model.load_state_dict(weights)
            return Intervention(
                split,
                {c: after["probe_loglik"][c] - base["probe_loglik"][c] for c in split},
                after["task_loglik"] - base["task_loglik"],
            )

        interventions = [pilot(index, split) for index, split in enumerate(splits)]
        for index in range(len(splits)) if save else ():  # the processes training along have read them
            (path.parent / ROUNDS_DIR / PILOT_SUPERVISION_FILE.format(index)).unlink(missing_ok=True)
    requirements = allocator.identify(interventions)
    log.info(
        "identified requirements from %d pilots: %s", len(splits), {c: round(w, 2) for c, w in requirements.items()}
    )
    result = {
        "tokens_per_pilot": tokens,
        "pilot_tokens": tokens * len(splits),
        "interventions": [i.to_json() for i in interventions],
        "requirements": requirements,
        "split": "dev",
    }
    if save:
        atomic_write_json(path, {"fingerprint": fingerprint, **result})
    return result
