"""Resuming a run: what identifies it, and each completed round saved atomically (entry, student, optimizer).

After each round the student, the optimizer state and the round's record entry are saved under
`rounds/`, so a killed run restarted in the same output directory resumes after its last
completed round, exactly; a finished run's `record.json` makes a relaunched sweep skip it. A
round's supervision (with its teacher logit cache) is saved as soon as the teacher has written it,
so a run killed while training resumes that round without the teacher generating it again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM

from capdistill.config.checks import ConfigError, locate
from capdistill.config.model_specs import MODEL_KINDS
from capdistill.distill.module import DistillationModule
from capdistill.errors import CapdistillError
from capdistill.io import atomic_dir, atomic_file
from capdistill.models.request import LoadedModel
from capdistill.results.record import RECORD_FILE
from capdistill.supervision.slices import Slice, slices_from_state, slices_state

log = logging.getLogger(__name__)
ROUNDS_DIR = "rounds"
ROUND_FILE = "round.json"
STUDENT_DIR = "student"
OPTIMIZER_FILE = "optimizer.pt"
SUPERVISION_FILE = "supervision-{:03d}.pt"  # a round's supervision (and teacher cache), saved before it trains
PILOT_SUPERVISION_FILE = "pilot-supervision-{:03d}.pt"  # a pilot's, for the processes that train along


def run_identity(config: dict[str, Any]) -> dict[str, Any]:
    """What must match for a run directory to be resumed: the config (as resolved plain data) but its
    paths, logging and report.

    A component chosen by `_target_` is identified by its label (the class's `name`, as the config's
    `name` key did before components were instantiated), so runs saved before keep resuming."""
    identity = {k: v for k, v in config.items() if k not in ("paths", "logger", "rebuild", "report")}
    for group in ("allocator", "loss", "trainer"):
        node = dict(identity.get(group) or {})
        target = node.pop("_target_", None)
        node.pop("_partial_", None)
        if target is not None and group != "trainer":
            node["name"] = component_label(target)
        identity[group] = node
    for role in ("teacher", "student"):
        identity[role] = model_identity(identity[role], role)
    distill = identity.get("distill")
    if isinstance(distill, dict) and not (distill.get("curriculum") or {}).get("stages"):
        # no curriculum draws prompts as before curricula existed: runs saved before keep their fingerprint
        identity["distill"] = {k: v for k, v in distill.items() if k != "curriculum"}
    evaluation = identity.get("evaluation")
    if isinstance(evaluation, dict):
        # a permission, not a setting: code runs isolated wherever it can, and the record says how it ran
        evaluation = {k: v for k, v in evaluation.items() if k != "allow_unsafe_code"}
        if not evaluation.get("dev_probe"):
            # no dev exact match per capability scores as before the option existed: the same run
            evaluation = {k: v for k, v in evaluation.items() if k != "dev_probe"}
        identity["evaluation"] = evaluation
    budget = identity.get("budget")
    if isinstance(budget, dict) and not budget.get("replay"):
        # no replay slice spends as before the option existed
        identity["budget"] = {k: v for k, v in budget.items() if k != "replay"}
    return identity


def model_identity(node: dict[str, Any], role: str) -> dict[str, Any]:
    """A teacher or student as its `kind` and its class's fields: a config saved when one union schema held
    both kinds' fields (and `kind` chose) matches the same model chosen by `_target_` today."""
    node = dict(node)
    target = node.pop("_target_", None)
    cls = locate(target, role) if target else MODEL_KINDS.get(node.get("kind", ""))
    if cls is None:
        return node
    keep = {f.name for f in fields(cls)} - {"_target_", "kind", *ENGINE_ACCESS}
    if node.get("engine") == "hf":  # in-process generate, the only engine before engines: runs keep their fingerprint
        keep.discard("engine")
    return {"kind": cls.KIND} | {k: v for k, v in node.items() if k in keep}


def component_label(target: str) -> str:
    """The label of the class a `_target_` names: its `name` (the config option it ships as), else the path."""
    try:
        return getattr(locate(target, "component"), "name", "") or target
    except ConfigError:
        return target


def run_fingerprint(identity: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


# Config fields added since runs were first saved, each with the value that behaves as before it existed:
# a saved config without the field is the same run when the current config holds that value.
ADDED_FIELDS: dict[str, Any] = {
    "loss.teacher_source": "live",  # topk/sampled ran the teacher on every batch before the logit cache
    "loss.fused_linear": False,
    "loss.cache_precision": "float16",
    "distill.packing": False,
    "distill.pack_length": 4096,
    # options greedy and tilted always took from their class, shown since their YAML extends the signature:
    # greedy's from ReadBandit (greedy extends read), tilted's shift
    "allocator.kappa": 0.0,
    "allocator.warmup": 0,
    "allocator.kappa_decay": 0.7,
    "allocator.kappa_every": 0.1,
    "allocator.one_hots": False,
    "allocator.trust_z": 1.0,
    "allocator.use_requirements": True,
    "allocator.adapt": True,
    "allocator.identify": "card",
    "allocator.pilots": 5,
    "allocator.pilot_fraction": 0.02,
    "allocator.entropy_weight": 0.01,
    "allocator.shift": 0.5,
}
# how a run reaches its teacher's engine (an address, timeouts, GPUs): the same run whatever they are
ENGINE_ACCESS = ("server", "vllm")


def config_changes(saved: dict[str, Any], current: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ. A key one side lacks counts only if the other side sets it:
    a config field added since (or removed) and left unset is no change, so runs stay resumable; so is
    a field of `ADDED_FIELDS` at the value that behaves as before it existed."""
    changes = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key), current.get(key)
        added = ADDED_FIELDS.get(f"{prefix}{key}", object())
        if key not in saved and b == added:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            changes += config_changes(a, b, f"{prefix}{key}.")
        elif a != b:
            changes.append(f"{prefix}{key}")
    return changes


def same_run(saved_fingerprint: str | None, saved_config: dict[str, Any] | None, identity: dict[str, Any]) -> list[str]:
    """[] when saved state belongs to the run of `identity`, else the differing keys (['?'] if unknown)."""
    if saved_fingerprint == run_fingerprint(identity):
        return []
    if saved_config is None:
        return ["?"]
    return config_changes(run_identity(saved_config), identity)


def finished_record(output_dir: Path, identity: dict[str, Any]) -> dict[str, Any] | None:
    """The record of a completed run of this config in `output_dir` (a relaunched sweep skips it)."""
    path = output_dir / RECORD_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except ValueError:  # damaged after it was written (it is written atomically): finish the run again
        log.warning("%s is damaged; it is written again from the saved rounds", path)
        return None
    return None if same_run(record.get("fingerprint"), record.get("config"), identity) else record


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
