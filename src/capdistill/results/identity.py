"""What identifies a run, and whether a directory already holds its complete record.

A run's identity is its resolved config but for where it writes, how it logs and how it reaches its teacher's
engine; its fingerprint is the identity's hash. A relaunched sweep skips a job whose directory holds a
`record.json` of the same identity, and it can tell that from the job's config alone, before any check of this
machine (a finished job needs no GPU, server or cache here).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import fields
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from capdistill.config.checks import ConfigError, locate
from capdistill.config.model_specs import MODEL_KINDS
from capdistill.results.record import RECORD_FILE

log = logging.getLogger(__name__)
SKIPPING = "%s already holds this run's complete record: skipping it"  # the log line of a skipped run (its dir)


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


def finished_run(cfg: DictConfig) -> dict[str, Any] | None:
    """The complete record of the run `cfg` describes, if its output directory holds one (else None, also when
    the config does not resolve: the run's own checks then say why)."""
    if not (Path(cfg.paths.output_dir) / RECORD_FILE).is_file():  # the common case, and no component is located
        return None
    try:
        config = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    except OmegaConfBaseException:
        return None
    assert isinstance(config, dict)
    return finished_record(Path(cfg.paths.output_dir), run_identity(config))
