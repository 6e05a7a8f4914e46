"""Resuming a run: each completed round saved atomically (entry, student, optimizer), and read back.

After each round the student, the optimizer state and the round's record entry are saved under
`rounds/`, so a killed run restarted in the same output directory resumes after its last
completed round, exactly; a finished run's `record.json` makes a relaunched sweep skip it. A
round's supervision (with its teacher logit cache) is saved as soon as the teacher has written it,
so a run killed while training resumes that round without the teacher generating it again.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM

from capdistill.distill.module import DistillationModule
from capdistill.errors import CapdistillError
from capdistill.io import atomic_dir, atomic_file
from capdistill.models.request import LoadedModel
from capdistill.results.identity import run_fingerprint, same_run
from capdistill.supervision.slices import Slice, slices_from_state, slices_state

log = logging.getLogger(__name__)
ROUNDS_DIR = "rounds"
ROUND_FILE = "round.json"
STUDENT_DIR = "student"
OPTIMIZER_FILE = "optimizer.pt"
SUPERVISION_FILE = "supervision-{:03d}.pt"  # a round's supervision (and teacher cache), saved before it trains
PILOT_SUPERVISION_FILE = "pilot-supervision-{:03d}.pt"  # a pilot's, for the processes that train along


def completed_rounds(output_dir: Path, identity: dict[str, Any]) -> list[dict[str, Any]]:
    """Record entries of the rounds a previous run in this directory completed, in order."""
    entries = []
    for path in sorted((output_dir / ROUNDS_DIR).glob("round-*")):
        if not (path / ROUND_FILE).is_file():
            continue
        try:
            saved = json.loads((path / ROUND_FILE).read_text())
        except ValueError as err:
            raise CapdistillError(
                f"{path / ROUND_FILE} is damaged ({type(err).__name__}); only the last round keeps its student, so "
                f"delete {output_dir / ROUNDS_DIR} to run from the start, or choose a new output directory"
            ) from None
        changes = same_run(saved["fingerprint"], saved.get("config"), identity)
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


def kept_rounds(output_dir: Path) -> int:
    """How many completed rounds `output_dir` keeps: what a rerun of its command resumes after."""
    return sum((path / ROUND_FILE).is_file() for path in (output_dir / ROUNDS_DIR).glob("round-*"))


def round_dir(output_dir: Path, index: int) -> Path:
    return output_dir / ROUNDS_DIR / f"round-{index:03d}"


def save_torch(state: Any, path: Path) -> None:
    """`torch.save` through a Python file: a full disk raises its OSError (ENOSPC), which `io.full_disk_reported`
    names in one line, where torch.save to a path raises a RuntimeError ("unexpected pos") that names no cause."""
    with open(path, "wb") as handle:
        torch.save(state, handle)


def save_round(
    output_dir: Path,
    index: int,
    student: LoadedModel,
    module: DistillationModule,
    entry: dict[str, Any],
    identity: dict[str, Any],
) -> None:
    """Write the round's entry, student and optimizer state atomically; drop the round's saved supervision and
    the previous round's weights and optimizer state (its entry stays)."""
    with atomic_dir(round_dir(output_dir, index), replace=True) as tmp:
        student.model.save_pretrained(tmp / STUDENT_DIR, safe_serialization=True)
        student.tokenizer.save_pretrained(tmp / STUDENT_DIR)
        save_torch(module.optimizer_state(), tmp / OPTIMIZER_FILE)
        saved = {"fingerprint": run_fingerprint(identity), "config": identity, "entry": entry}
        (tmp / ROUND_FILE).write_text(json.dumps(saved, indent=2))
    (output_dir / ROUNDS_DIR / SUPERVISION_FILE.format(index)).unlink(
        missing_ok=True
    )  # only a round in flight needs it
    if index > 0:
        shutil.rmtree(round_dir(output_dir, index - 1) / STUDENT_DIR, ignore_errors=True)
        (round_dir(output_dir, index - 1) / OPTIMIZER_FILE).unlink(missing_ok=True)


def resume_state(
    output_dir: Path, history: list[dict[str, Any]], student: LoadedModel, module: DistillationModule
) -> None:
    """Load the student weights and optimizer state saved after the last completed round."""
    last = round_dir(output_dir, len(history) - 1)
    try:
        resumed = AutoModelForCausalLM.from_pretrained(last / STUDENT_DIR)
        state = torch.load(last / OPTIMIZER_FILE, weights_only=False)
    except Exception as err:  # unreadable weights or optimizer state (safetensors, pickle: their own types)
        raise CapdistillError(
            f"{last} is damaged ({type(err).__name__}); only the last round keeps its student, so delete "
            f"{output_dir / ROUNDS_DIR} to run from the start, or choose a new output directory"
        ) from None
    student.model.load_state_dict(resumed.state_dict())
    module.load_optimizer_state(state)


def save_supervision(
    output_dir: Path, index: int, slices: list[Slice], key: dict[str, Any], pattern: str = SUPERVISION_FILE
) -> None:
    """Store round `index`'s supervision atomically, under `key` (the run's fingerprint, the round's shares
    and prompt cursors: what decides it); `pattern` names the file (a pilot's: `PILOT_SUPERVISION_FILE`)."""
    with atomic_file(output_dir / ROUNDS_DIR / pattern.format(index)) as tmp:
        save_torch({"key": key, "slices": slices_state(slices)}, tmp)


def load_supervision(
    output_dir: Path, index: int, key: dict[str, Any], pattern: str = SUPERVISION_FILE, match: tuple[str, ...] = ()
) -> list[Slice] | None:
    """Round `index`'s saved supervision if it was written under the same `key` (or the same values of its
    `match` keys); None otherwise (not saved, unreadable, or another run's or round's: then the teacher writes
    it again)."""
    path = output_dir / ROUNDS_DIR / pattern.format(index)
    if not path.is_file():
        return None
    try:
        saved = torch.load(path, weights_only=True)
    except Exception as err:  # a damaged file: generating again costs time, not correctness
        log.warning("%s is unreadable (%s); the teacher writes round %d again", path, type(err).__name__, index + 1)
        return None
    same = all(saved["key"].get(k) == key[k] for k in match) if match else saved["key"] == key
    return slices_from_state(saved["slices"]) if same else None
