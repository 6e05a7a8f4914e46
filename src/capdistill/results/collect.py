"""`capdistill collect DIR`: every run's `record.json` under DIR as one tidy table.

`results.csv` / `results.parquet` hold one row per run (its settings, final scores, changes
from the student base, spend); `rounds.csv` one row per run and round (the allocation
path). Columns use the record's own names, so a new capability or task adds columns and
nothing else.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import pandas as pd

from capdistill.errors import CapdistillError
from capdistill.io import atomic_file, remove_stale_temporaries
from capdistill.results.record import RECORD_FILE

log = logging.getLogger(__name__)
RESULTS_CSV, RESULTS_PARQUET, ROUNDS_CSV = "results.csv", "results.parquet", "rounds.csv"

# config fields of `read` whose non-default values name the paper's ablations, then the ablations
# of this implementation's deviations from the paper (allocation/bandit.py)
ABLATIONS = (
    ("use_requirements", False, "no-identification"),
    ("adapt", False, "no-adaptation"),
    ("beta", 0.0, "no-spillover"),
    ("context", "paper", "paper-context"),
    ("calibration", "off", "no-calibration"),
    ("calibration", "affine_sigma", "sigma-calibration"),
    ("one_hots", True, "one-hots"),
    ("proxy_units", "relative", "relative"),
)


def variant(name: str, allocator: dict[str, Any]) -> str:
    """A label for allocator `name` as configured: its name, plus the ablations or options that set it apart."""
    if name == "single":
        return f"single:{allocator['capability']}"
    if name == "fixed":
        weights = allocator.get("weights") or {}
        return "fixed:" + ",".join(f"{c}={w:g}" for c, w in sorted(weights.items()))
    if name == "tilted":
        shift = f"@{allocator['shift']:g}" if allocator.get("shift") is not None else ""  # unset: the class's default
        return f"tilted:{allocator['toward']}{shift}"
    if name == "read":
        off = [label for key, value, label in ABLATIONS if allocator.get(key) == value]
        trust = ["trust"] if allocator.get("trust_radius") is not None else []
        learned = ["learned-requirements"] if allocator.get("identify") == "learned" else []
        return "-".join([name, *trust, *off, *learned])
    return name


def scores(entry: dict[str, Any], capabilities: list[str]) -> dict[str, float]:
    """An evaluation's scores as columns: exact match on eval (`task_utility`, `probe/<c>`; NaN where the
    entry has none, as rounds between evaluation checkpoints) and the dev log-likelihood proxies."""
    probe, loglik = entry.get("probe", {}), entry.get("probe_loglik", {})
    row = {"task_utility": entry.get("task_utility", math.nan), "task_loglik": entry.get("task_loglik", math.nan)}
    for c in capabilities:
        row[f"probe/{c}"] = probe.get(c, math.nan)
        row[f"loglik/{c}"] = loglik.get(c, math.nan)
    return row


def record_row(record: dict[str, Any], run: str) -> dict[str, Any]:
    """One table row: a run's settings, final scores and their change from the student base.

    Keys later versions added are read when present and NaN otherwise, so older records still collect:
    the final eval sizes (`final.n`) give one run's binomial standard error of the task utility, and
    `final_dev` the task utility on the dev split (what `grid` chooses on, never eval).
    """
    cfg, final, base = record["config"], record["final"], record["reference"]["student_base"]
    spent, capabilities = record["budget"]["spent_by_capability"], list(final["probe"])
    n = final.get("n", {}).get("task", math.nan)
    p = final["task_utility"] / 100
    row: dict[str, Any] = {
        "run": run,
        "experiment": record.get("experiment", cfg.get("experiment_name")),
        "allocator": record.get("allocator", cfg["allocator"].get("name")),
        "variant": variant(record.get("allocator", cfg["allocator"].get("name")), cfg["allocator"])
        + ("+curriculum" if ((cfg.get("distill") or {}).get("curriculum") or {}).get("stages") else "")
        + (f"+replay={replay:g}" if (replay := (cfg.get("budget") or {}).get("replay")) else ""),
        "figure": (cfg.get("report") or {}).get("figure"),
        "loss": record.get("loss", cfg["loss"].get("name")),  # records before `_target_` had it in the config
        "task": record.get("task", cfg["task"]["name"]),
        "seed": record["seed"],
        "budget_tokens": record["budget"]["total_tokens"],
        "spent_tokens": record["budget"]["spent_tokens"],
        "rounds": len(record["rounds"]),
        **scores(final, capabilities),
        "task_utility_n": n,
        "task_utility_se": 100 * math.sqrt(p * (1 - p) / n) if n > 0 else math.nan,
        "eval_split": final.get("splits", {}).get("task_utility"),
        "dev_task_utility": (record.get("final_dev") or {}).get("task_utility", math.nan),  # None: a suite
        "base_task_utility": base["task_utility"],
        "teacher_task_utility": record["reference"]["teacher"]["task_utility"],
        "total_s": record["timing"]["total_s"],
    }
    if "lmeval" in record:  # the final evaluation through lm-eval
        row["lmeval_task_utility"] = record["lmeval"]["task_utility"]
    deltas = {c: final["probe"][c] - base["probe"][c] for c in capabilities}
    row["task_gain"] = final["task_utility"] - base["task_utility"]
    # on-target: the capabilities the allocator spent on (a replay slice spends on all, chosen by none)
    chosen = {c for c in capabilities if spent[c] > 0 and any(e["allocation"].get(c, 0) > 0 for e in record["rounds"])}
    row.update(transfer_columns(deltas, chosen))
    # the same on dev, in the proxy's units (log-likelihood per token of the teacher's responses): what a
    # choice made from a transfer sweep reads (records without a dev proxy per capability: none)
    loglik, base_loglik = final.get("probe_loglik", {}), base.get("probe_loglik", {})
    dev = {c: loglik[c] - base_loglik[c] for c in capabilities if c in loglik and c in base_loglik}
    if len(dev) == len(capabilities):
        row.update({f"dev_{k}": v for k, v in transfer_columns(dev, chosen).items()})
    # and in the paper's own units, exact match on dev (runs with evaluation.dev_probe)
    dev_probe, base_dev_probe = (record.get("final_dev") or {}).get("probe", {}), base.get("dev_probe", {})
    dev_em = {c: dev_probe[c] - base_dev_probe[c] for c in capabilities if c in dev_probe and c in base_dev_probe}
    if len(dev_em) == len(capabilities):
        row.update({f"dev_em_{k}": v for k, v in transfer_columns(dev_em, chosen).items()})
    for c in capabilities:
        row[f"delta/{c}"] = deltas[c]
        row[f"spent/{c}"] = spent[c]
        if c in dev:
            row[f"dev_delta/{c}"] = dev[c]
        if c in dev_em:
            row[f"dev_probe/{c}"] = dev_probe[c]
            row[f"dev_em_delta/{c}"] = dev_em[c]
    return row


def transfer_columns(deltas: dict[str, float], on_target: set[str]) -> dict[str, float]:
    """A run's transfer statistics from its capabilities' changes over the student base: the mean change of the
    `on_target` ones and of the others (off-target), the sum of the off-target drops (negative spillover), and the
    share (%) of the off-target capabilities that ended below the base (negative transfer)."""
    on = [d for c, d in deltas.items() if c in on_target]
    off = [d for c, d in deltas.items() if c not in on_target]
    return {
        "on_target_change": sum(on) / len(on) if on else math.nan,
        "off_target_change": sum(off) / len(off) if off else 0.0,
        "negative_spillover": sum(min(d, 0.0) for d in off),
        "negative_transfer_rate": 100 * sum(d < 0 for d in off) / len(off) if off else math.nan,
    }


def round_rows(record: dict[str, Any], run: str) -> list[dict[str, Any]]:
    """One row per round: its allocation, spend and scores (exact match only at evaluation checkpoints)."""
    rows = []
    for entry in record["rounds"]:
        capabilities = list(entry["spent_by_capability"])
        row = {"run": run, "round": entry["round"], **scores(entry, capabilities)}
        row.update({f"allocation/{c}": w for c, w in entry["allocation"].items()})
        row.update({f"spent/{c}": t for c, t in entry["spent_by_capability"].items()})
        rows.append(row)
    return rows


def find_records(root: Path) -> list[Path]:
    if not root.is_dir():
        raise CapdistillError(f"collect: {root} is not a directory")
    found = sorted(root.rglob(RECORD_FILE))
    if not found:
        raise CapdistillError(f"collect: no {RECORD_FILE} under {root} (did the sweep finish any job?)")
    return found


def collect(root: Path, out_dir: Path | None = None) -> pd.DataFrame:
    """Tabulate every record under `root`; writes results.csv/.parquet and rounds.csv to `out_dir` (default root)."""
    root = Path(root)
    out_dir = Path(out_dir or root)
    rows, rounds = [], []
    for path in find_records(root):
        run = str(path.parent.relative_to(root)) or "."
        try:
            record = json.loads(path.read_text())
            row, run_rounds = record_row(record, run), round_rows(record, run)
        except (ValueError, KeyError, TypeError, AttributeError) as err:  # truncated, hand-edited, not a record
            log.warning("collect: skipping %s: not a complete record (%s: %s)", path, type(err).__name__, err)
            continue
        rows.append(row)
        rounds += run_rounds
    if not rows:
        raise CapdistillError(f"collect: no complete {RECORD_FILE} under {root} (each one found is corrupt)")
    remove_stale_temporaries(out_dir)
    table = pd.DataFrame(rows).sort_values(["experiment", "variant", "loss", "budget_tokens", "seed", "run"])
    table = table.reset_index(drop=True)
    with atomic_file(out_dir / RESULTS_CSV) as tmp:
        table.to_csv(tmp, index=False)
    with atomic_file(out_dir / RESULTS_PARQUET) as tmp:
        table.to_parquet(tmp, index=False)
    with atomic_file(out_dir / ROUNDS_CSV) as tmp:
        pd.DataFrame(rounds).to_csv(tmp, index=False)
    return table


def load_table(source: Path) -> pd.DataFrame:
    """A collected table: a results file, or a sweep directory (collected now)."""
    source = Path(source)
    if source.is_dir():
        return collect(source)
    if not source.is_file():
        raise CapdistillError(f"plot: {source} does not exist")
    if source.suffix == ".parquet":
        return pd.read_parquet(source)
    if source.suffix == ".csv":
        return pd.read_csv(source)
    raise CapdistillError(f"plot: {source} is neither a sweep directory nor a .csv/.parquet table")
