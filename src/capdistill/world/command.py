"""`capdistill build-world`: build or reuse the teacher and student base, write world.json."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from capdistill.components import RunParts, model_requests, world_sources
from capdistill.config.model_specs import SyntheticModel
from capdistill.errors import CapdistillError
from capdistill.evaluation.proxy import Proxy
from capdistill.io import atomic_write_json
from capdistill.models.request import LoadedModel
from capdistill.world.build import ensure_model, reference_responses

log = logging.getLogger(__name__)


def world_table(world: dict[str, Any]) -> str:
    """Markdown table of teacher and student-base scores per capability and task."""
    t, s = world["teacher"]["scores"], world["student_base"]["scores"]
    lines = ["| capability / task | teacher | student base | student log-lik (proxy) |", "| --- | ---: | ---: | ---: |"]
    for name, value in t["probe"].items():
        lines.append(f"| {name} | {value:.1f} | {s['probe'][name]:.1f} | {world['student_base']['proxy'][name]:.3f} |")
    for name, value in t["task"].items():
        lines.append(f"| task: {name} | {value:.1f} | {s['task'][name]:.1f} | |")
    return "\n".join(lines)


def summarize(model: LoadedModel) -> dict[str, Any]:
    keep = ("hash", "params", "steps", "train_seconds", "scores", "probe_size", "eval_size")
    return {"path": str(model.path), **{k: model.info[k] for k in keep if k in model.info}}


def build_world(cfg: DictConfig, parts: RunParts | None = None) -> dict[str, Any]:
    """Ensure both world models exist; write `world.json` in the run directory and print the table. `parts`: what
    `components.validate(cfg)` returned (the model requests are made here if not given)."""
    models = parts.models if parts is not None else model_requests(cfg)
    for role, request in models.items():
        if not isinstance(request.model, SyntheticModel):
            raise CapdistillError(
                f"build-world builds the synthetic world's models; {role}={request.model.name} is a Hugging Face "
                "model, loaded as it is (nothing to build)"
            )
    sources = world_sources(cfg)
    sources.check_pools(max(models["teacher"].model.train.dev_size, models["student"].model.train.dev_size))
    out = Path(cfg.paths.output_dir)
    teacher = ensure_model(models["teacher"], sources, out)
    student = ensure_model(models["student"], sources, out)
    target = models["teacher"].model.train.target
    batch = cfg.capabilities.probe_batch_size
    scores = teacher.info["scores"]
    worst = min(list(scores["probe"].values()) + list(scores["task"].values()))
    world = {
        "experiment": cfg.experiment_name,
        "capabilities": OmegaConf.to_container(cfg.capabilities, resolve=True, enum_to_str=True),
        "teacher": summarize(teacher),
        "student_base": {
            **summarize(student),
            "proxy": Proxy(
                student.tokenizer, sources.build_probes, reference_responses(teacher, sources, batch), batch
            )(student.model),
        },
        "teacher_target": target,
        "teacher_meets_target": None if target is None else worst >= target,
    }
    atomic_write_json(out / "world.json", world)
    print(world_table(world))
    print(f"world.json: {out / 'world.json'}")
    if target is not None and worst < target:
        log.warning("teacher's lowest score %.1f is below its target %.1f", worst, target)
    return world
