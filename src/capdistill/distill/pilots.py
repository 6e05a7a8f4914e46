"""Pilot runs for requirement identification (ReAD's intervention data), run before round 0.

Each pilot distils a copy of the student base on one of the allocator's sparse splits for
`pilot_fraction` of the budget, then probes every capability and the task; the changes
are the interventions the allocator fits its requirement vector to. The student is put
back to its base weights after every pilot. Pilot tokens are spent outside the budget
and recorded under `identification` in the record; the results are saved atomically, so
a resumed run fits the same requirements without redoing the pilots.
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from capdistill.allocation import Allocator
from capdistill.allocation.requirements import Intervention
from capdistill.distill.rounds import generate_round, train_round
from capdistill.evaluation.scores import evaluate
from capdistill.io import atomic_write_json
from capdistill.losses import DistillLoss
from capdistill.supervision.budget import split_tokens
from capdistill.world.build import WorldModel
from capdistill.world.sources import WorldSources

log = logging.getLogger(__name__)

PILOTS_FILE = "identification.json"


def run_pilots(
    cfg: DictConfig,
    allocator: Allocator,
    total: int,
    teacher: WorldModel,
    student: WorldModel,
    loss: DistillLoss,
    sources: WorldSources,
    responses: dict[str, list[str]],
    base: dict[str, Any],
    device: torch.device,
    fingerprint: str,
) -> dict[str, Any] | None:
    """Run the allocator's pilots (or load a previous run's), let it identify the task's requirements.

    Returns what goes into the record's `identification`, or None if the allocator runs no pilots.
    """
    splits = allocator.pilot_splits()
    if not splits:
        return None
    path = Path(cfg.paths.output_dir) / PILOTS_FILE
    saved = json.loads(path.read_text()) if path.is_file() else None
    if saved is not None and saved["fingerprint"] == fingerprint:
        interventions = [Intervention(**i) for i in saved["interventions"]]
        tokens = saved["tokens_per_pilot"]
    else:
        tokens = max(1, round(allocator.pilot_fraction * total))

        def pilot(index: int, split: dict[str, float]) -> Intervention:
            """One pilot from the student base; the student's weights are restored afterwards."""
            weights = copy.deepcopy(student.model.state_dict())
            seed_index = cfg.budget.rounds + index  # distinct from every real round's data and shuffling seeds
            try:
                shares = split_tokens(tokens, split)
                slices = generate_round(cfg, seed_index, shares, teacher, student, sources, device)
                train_round(cfg, seed_index, slices, teacher, student, loss, None, 0)
                student.model.to(device)
                batch = cfg.capabilities.probe_batch_size
                scores = evaluate(student.model, student.tokenizer, sources, cfg.task.source, batch, responses)
            finally:
                student.model.load_state_dict(weights)
            return Intervention(
                split,
                {c: scores["probe"][c] - base["probe"][c] for c in split},
                scores["task_utility"] - base["task_utility"],
            )

        interventions = [pilot(index, split) for index, split in enumerate(splits)]
    requirements = allocator.identify(interventions)
    log.info(
        "identified requirements from %d pilots: %s", len(splits), {c: round(w, 2) for c, w in requirements.items()}
    )
    result = {
        "tokens_per_pilot": tokens,
        "pilot_tokens": tokens * len(splits),
        "interventions": [asdict(i) for i in interventions],
        "requirements": requirements,
    }
    atomic_write_json(path, {"fingerprint": fingerprint, **result})
    return result
