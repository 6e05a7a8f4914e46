"""`capdistill plot`: the paper's figures from a collected table, as PNG + PDF + a markdown table.

Every figure shows seed means with Student-t 95% confidence intervals (none with a single
seed) and budgets in tokens. Seeds are common random numbers (every allocator sees the same
prompts and eval items for a seed), so allocators are compared to a baseline by paired per-seed
differences (`capdistill.results.stats`):

* `budget_curves` - task utility vs budget, one line per allocator, against the teacher's and
  the student base's levels; the paired difference to the baseline; every capability's probe
  score (paper RQ2); `losses` - task utility and probes with one line per KD loss;
* `schedules`, `ablation` - paired differences to the baseline per allocator at each budget
  (absolute task utility without a baseline), as bars (the schedule table and the ablation figure);
* `transfer` - transfer matrices T_ij(B) (probe change of capability j after distilling only
  i at budget B), negative spillover and the negative-transfer rate vs budget, and the marginal
  on-target gain per budget increment (paper Fig 1 a-d), from `allocator=single` runs.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from capdistill.errors import CapdistillError  # noqa: E402
from capdistill.io import atomic_file, atomic_write_text  # noqa: E402
from capdistill.results.figures import BASELINES, FIGURES  # noqa: E402
from capdistill.results.stats import cell, over_tasks, paired, summarize  # noqa: E402


def tokens(n: float) -> str:
    """12000 -> '12k', 1500000 -> '1.5M'."""
    for size, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= size:
            return f"{n / size:g}{unit}"
    return f"{n:g}"


def markdown(
    summary: pd.DataFrame,
    rows: str,
    cols: str,
    signed: bool = False,
    digits: int = 1,
    bounds: tuple[float, float] | None = None,
) -> str:
    """A `rows` x `cols` markdown table of `summary`'s cells 'mean ± ci (n=...)' (`signed` for differences;
    `bounds`: the quantity's range, to which an interval is clipped)."""
    col_values = sorted(summary[cols].unique())
    header = f"| {rows} | " + " | ".join(tokens(c) if cols == "budget_tokens" else str(c) for c in col_values) + " |"
    lines = [header, "|" + " --- |" * (len(col_values) + 1)]
    for key, part in summary.groupby(rows, sort=True):
        cells = []
        for c in col_values:
            hit = part[part[cols] == c]
            cells.append(
                ""
                if hit.empty
                else cell(hit["mean"].iloc[0], hit["ci"].iloc[0], hit["n"].iloc[0], signed, digits, bounds)
            )
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


PERCENT = (0.0, 100.0)
NEGATIVE_TRANSFER = (
    "negative-transfer rate (% of the capabilities a run spent nothing on that ended below the student base)"
)


def negative_transfer(table: pd.DataFrame, rows: str) -> str:
    """The negative-transfer rate per `rows` x budget as a titled markdown table; '' when no run has
    one (older tables, or runs that spent on every capability)."""
    if "negative_transfer_rate" not in table.columns:
        return ""
    rated = table.dropna(subset=["negative_transfer_rate"])
    if rated.empty:
        return ""
    rates = summarize(rated, [rows, "budget_tokens"], "negative_transfer_rate")
    return f"{NEGATIVE_TRANSFER}\n\n" + markdown(rates, rows, "budget_tokens", bounds=PERCENT)


def report(table: pd.DataFrame, hue: str, baseline: str | None, pairs: pd.DataFrame | None) -> str:
    """The markdown beside a figure: task utility per `hue` x budget and, with a baseline, the paired differences."""
    against = f"baseline: {baseline} (paired per-seed differences)" if baseline else "no baseline"
    absolute = markdown(summarize(table, [hue, "budget_tokens"], "task_utility"), hue, "budget_tokens")
    text = f"{against}; cells: mean ± Student-t 95% CI over seeds (n: runs or seed pairs)\n\n"
    text += f"task utility (exact match, %)\n\n{absolute}"
    if pairs is not None:
        text += f"\npaired difference vs {baseline}\n\n" + markdown(pairs, "variant", "budget_tokens", signed=True)
    rates = negative_transfer(table, hue)
    return text + (f"\n{rates}" if rates else "")


def _grid(n: int, width: float = 3.4, height: float = 2.8) -> tuple[Figure, list[Any]]:
    cols = min(n, 5)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows + 0.6), squeeze=False)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _label(metric: str) -> str:
    return "task utility" if metric == "task_utility" else metric.split("/", 1)[1].replace("_", " ")


def _budget_axis(ax: Any, budgets: list[int]) -> None:
    """A log-scaled budget axis labelled in tokens, with a light grid."""
    ax.set_xscale("log")
    ax.set_xticks(budgets, [tokens(b) for b in budgets])
    ax.minorticks_off()
    ax.set_xlabel("budget (tokens)")
    ax.grid(alpha=0.3)


MARKERS, LINESTYLES = "osD^vPX*", ("-", "--", "-.", ":")


def _style(i: int) -> dict[str, Any]:
    """Colour, marker and line style of the i-th series: lines that coincide stay distinguishable."""
    return {"color": f"C{i % 10}", "marker": MARKERS[i % len(MARKERS)], "linestyle": LINESTYLES[i % len(LINESTYLES)]}


def _span(low: int, high: int) -> str:
    return str(low) if low == high else f"{low}-{high}"


def _percent_axis(ax: Any) -> None:
    """Keep an exact-match axis inside 0-100 (flat data no longer shows negative percentages), at least 2 points tall."""
    low, high = ax.get_ylim()
    low, high = max(0.0, low), min(100.0, high)
    if high - low < 2.0:
        low, high = max(0.0, min(low, 100.0 - 2.0)), max(high, min(100.0, low + 2.0))
    ax.set_ylim(low, high + (0.015 * (high - low) if high == 100.0 else 0.0))  # a level at 100 stays visible


def _spend_panel(ax: Any, table: pd.DataFrame, hue: str, spends: list[str], budgets: list[int]) -> None:
    """Where each `hue` value spent its budget: the mean share per capability at the largest budget, stacked."""
    top = table[table["budget_tokens"] == budgets[-1]]
    shares = top.groupby(hue)[spends].mean()
    shares = 100 * shares.div(shares.sum(axis=1).replace(0, 1), axis=0)
    left = pd.Series(0.0, index=shares.index)
    for i, column in enumerate(spends):
        ax.barh([str(k) for k in shares.index], shares[column], left=left, color=f"C{i % 10}", label=column[6:])
        left += shares[column]
    ax.set_xlim(0, 100)
    ax.set_title(f"share of spent tokens (%) at {tokens(budgets[-1])}")
    ax.legend(fontsize=6, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.1), frameon=False)


# table column -> label of the reference levels drawn on the task utility panel
REFERENCES = {"teacher_task_utility": "teacher", "base_task_utility": "student base"}


def curves(table: pd.DataFrame, hue: str, title: str, baseline: str | None = None) -> tuple[Figure, str]:
    """Task utility vs budget per `hue` value against the teacher's and the student base's levels; with a
    `baseline` variant, the paired difference to it; then one panel per capability's probe score."""
    pairs = paired(table, baseline) if baseline else None
    probes = sorted(c for c in table.columns if c.startswith("probe/"))
    spends = sorted(c for c in table.columns if c.startswith("spent/"))
    budgets = sorted(table["budget_tokens"].unique())
    keys = sorted(table[hue].unique())
    styles = {key: _style(i) for i, key in enumerate(keys)}
    seeds = table.groupby([hue, "budget_tokens"])["task_utility"].count().groupby(level=0)
    labels = {key: f"{key} (n={_span(seeds.min()[key], seeds.max()[key])})" for key in keys}  # runs per point
    fig, axes = _grid(1 + (pairs is not None) + bool(spends) + len(probes))
    for ax, metric in zip([axes[0], *axes[len(axes) - len(probes) :]], ["task_utility", *probes]):
        for key, part in summarize(table, [hue, "budget_tokens"], metric).groupby(hue, sort=True):
            x, low, high = part["budget_tokens"], part["mean"] - part["ci"], part["mean"] + part["ci"]
            ax.plot(x, part["mean"], label=labels[key], **styles[key])
            ax.fill_between(x, low, high, color=styles[key]["color"], alpha=0.15)  # NaN (one run): no band
        _budget_axis(ax, budgets)
        ax.set_title(_label(metric))
        ax.set_ylabel("exact match (%)")
        _percent_axis(ax)
    if spends:
        _spend_panel(axes[1 + (pairs is not None)], table, hue, spends, budgets)
    for (column, name), color in zip(REFERENCES.items(), ("black", "grey")):
        if column in table.columns:
            axes[0].axhline(table[column].mean(), color=color, linestyle="--", lw=1, label=name)
    axes[0].autoscale(enable=True, axis="y")  # take the reference levels in, then keep to 0-100 again
    _percent_axis(axes[0])
    if pairs is not None:
        ax = axes[1]
        groups = list(pairs.groupby("variant", sort=True))
        for i, (key, part) in enumerate(groups):
            dodge = math.exp(0.04 * (i - (len(groups) - 1) / 2))  # side by side on the log axis: bars stay apart
            x = part["budget_tokens"] * dodge
            style = {k: v for k, v in styles[key].items() if k != "linestyle"}
            ax.errorbar(x, part["mean"], yerr=part["ci"], capsize=3, label=labels[key], **style)
        ax.axhline(0, color="grey", lw=0.8)
        _budget_axis(ax, budgets)
        ax.set_title(f"paired difference vs {baseline}")
        ax.set_ylabel("Δ task utility (points)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.suptitle(title, y=0.995, fontsize=12)
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.97), ncol=min(len(labels), 6), title=hue)
    fig.tight_layout(rect=(0, 0, 1, 0.9))
    return fig, report(table, hue, baseline, pairs)


def bars(table: pd.DataFrame, title: str, baseline: str | None = None) -> tuple[Figure, str]:
    """Per allocator variant, grouped by budget, with 95% error bars: the paired difference to `baseline`,
    or the absolute task utility without one."""
    pairs = paired(table, baseline) if baseline else None
    summary = summarize(table, ["variant", "budget_tokens"], "task_utility") if pairs is None else pairs
    budgets, variants = sorted(summary["budget_tokens"].unique()), sorted(summary["variant"].unique())
    width = 0.8 / len(variants)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.4 * len(budgets) * len(variants) ** 0.5 + 3) + 1.8, 3.8))
    for i, name in enumerate(variants):
        part = summary[summary["variant"] == name].set_index("budget_tokens").reindex(budgets)
        xs = [b + (i - (len(variants) - 1) / 2) * width for b in range(len(budgets))]
        ax.bar(xs, part["mean"], width, yerr=part["ci"], capsize=3, label=name)
    ax.set_xticks(range(len(budgets)), [tokens(b) for b in budgets])
    ax.set_xlabel("budget (tokens)")
    if pairs is None:
        ax.set_ylabel("task utility (exact match, %)")
        ax.set_title(f"{title}: task utility")
    else:
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_ylabel(f"Δ task utility vs {baseline} (points)")
        ax.set_title(f"{title}: task utility, paired difference vs {baseline}")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: never over a bar
    fig.tight_layout()
    return fig, report(table, "variant", baseline, pairs)


def distilled(variant: str) -> str:
    """The capability a `single` run distilled, from its variant label (`single:math`, `single:math+replay=0.1`)."""
    return variant.split(":", 1)[1].split("+", 1)[0]


def transfer(table: pd.DataFrame, title: str) -> tuple[Figure, str]:
    """T_ij(B) heatmaps per budget, negative spillover vs budget, and the marginal on-target gain
    per budget increment (paper Fig 1 a-d; runs with allocator=single)."""
    single = table[table["allocator"] == "single"]
    if single.empty:
        raise CapdistillError("plot --figure transfer needs allocator=single runs (experiment=transfer)")
    caps = [c.split("/", 1)[1] for c in table.columns if c.startswith("delta/")]
    budgets = sorted(single["budget_tokens"].unique())
    fig, axes = _grid(len(budgets) + 2, 4.2, 3.8)
    text = []
    for ax, budget in zip(axes, budgets):
        part = single[single["budget_tokens"] == budget]
        matrix = part.groupby("variant")[[f"delta/{c}" for c in caps]].mean()
        matrix.index = [distilled(v) for v in matrix.index]
        limit = max(1.0, float(matrix.abs().to_numpy().max()))
        image = ax.imshow(matrix.to_numpy(), cmap="RdBu", vmin=-limit, vmax=limit)
        ax.set_xticks(range(len(caps)), caps, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(len(matrix)), matrix.index, fontsize=7)
        ax.set_xlabel("evaluated capability")
        ax.set_ylabel("distilled capability")
        ax.set_title(f"T_ij at {tokens(budget)} tokens (Δ points)", fontsize=9)
        fig.colorbar(image, ax=ax, fraction=0.046)
        text.append(f"T_ij at {tokens(budget)} tokens\n\n| distilled | " + " | ".join(caps) + " |\n")
        text.append("|" + " --- |" * (len(caps) + 1) + "\n")
        for name, values in matrix.iterrows():
            text.append(f"| {name} | " + " | ".join(f"{v:+.1f}" for v in values) + " |\n")
        text.append("\n")
    pooled = single.assign(distilled="one capability, pooled")  # every distilled capability's runs together
    spill = summarize(pooled, ["distilled", "budget_tokens"], "negative_spillover")
    ax = axes[-2]
    ax.errorbar(spill["budget_tokens"], spill["mean"], yerr=spill["ci"], marker="o", capsize=3)
    _budget_axis(ax, budgets)
    ax.set_ylabel("negative off-target change (points)")
    ax.set_title("negative spillover vs budget", fontsize=9)
    text.append("negative spillover (sum of the off-target drops, points) vs budget\n\n")
    text.append(markdown(spill, "distilled", "budget_tokens", signed=True) + "\n")
    rates = negative_transfer(pooled, "distilled")
    if rates:
        text.append(rates + "\n")
    text.append(marginal_gains(single, budgets, axes[-1]))
    text.append("\n" + transfer_statistics(pooled))
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig, "".join(text)


# (column, label, digits): a run's transfer statistics on eval (exact match, points) and on dev (the proxy)
TRANSFER_STATISTICS = (  # column, label, digits, range (a rate's interval is clipped to it)
    ("on_target_change", "on-target change (points)", 1, None),
    ("off_target_change", "off-target mean change (points)", 1, None),
    ("negative_transfer_rate", "negative-transfer rate (%)", 1, PERCENT),
    ("dev_on_target_change", "dev: on-target change (log-likelihood per token)", 3, None),
    ("dev_off_target_change", "dev: off-target mean change (log-likelihood per token)", 3, None),
    ("dev_negative_transfer_rate", "dev: negative-transfer rate (%)", 1, PERCENT),
    ("dev_em_on_target_change", "dev exact match: on-target change (points)", 1, None),
    ("dev_em_off_target_change", "dev exact match: off-target mean change (points)", 1, None),
    ("dev_em_negative_transfer_rate", "dev exact match: negative-transfer rate (%)", 1, PERCENT),
)


def transfer_statistics(pooled: pd.DataFrame) -> str:
    """The paper's transfer statistics per budget, pooled over the distilled capabilities: on-target gain,
    off-target mean change and negative-transfer rate, on eval and on dev (what a choice reads)."""
    lines = ["transfer statistics, pooled over the distilled capabilities (eval, then dev)\n"]
    for column, label, digits, bounds in TRANSFER_STATISTICS:
        if column in pooled and pooled[column].notna().any():
            summary = summarize(pooled.assign(statistic=label), ["statistic", "budget_tokens"], column)
            signed = bounds is None  # changes are signed, rates are not
            lines.append(markdown(summary, "statistic", "budget_tokens", signed=signed, digits=digits, bounds=bounds))
    header, *tables = lines
    if not tables:  # a table collected before these columns existed
        return ""
    return header + "\n" + tables[0] + "".join(t.split("\n", 2)[2] for t in tables[1:])


def marginal_gains(single: pd.DataFrame, budgets: list[int], ax: Any) -> str:
    """Per distilled capability: the gain on itself per 1k tokens between consecutive budgets
    (from 0 tokens, where the gain is 0), drawn on `ax`; returns the markdown table."""
    target = single["variant"].map(distilled)
    own = single.assign(target=target, gain=[row[f"delta/{t}"] for t, (_, row) in zip(target, single.iterrows())])
    means = own.groupby(["target", "budget_tokens"])["gain"].mean().unstack().reindex(columns=budgets)
    steps = [0, *budgets]
    marginal = pd.DataFrame(
        {b: (means[b] - (means[a] if a else 0.0)) * 1000 / (b - a) for a, b in zip(steps, steps[1:])}
    )
    for name, values in marginal.iterrows():
        ax.plot(budgets, values.to_numpy(), marker="o", label=name)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xscale("log")
    ax.set_xticks(budgets, [f"{tokens(a)}→{tokens(b)}" for a, b in zip(steps, steps[1:])])
    ax.minorticks_off()
    ax.set_xlabel("budget increment (tokens)")
    ax.set_ylabel("on-target gain per 1k tokens (points)")
    ax.set_title("marginal gain per budget increment", fontsize=9)
    ax.legend(fontsize=6, ncol=2)
    ax.grid(alpha=0.3)
    header = " | ".join(f"{tokens(a)}→{tokens(b)}" for a, b in zip(steps, steps[1:]))
    rows = [f"| {name} | " + " | ".join(f"{v:+.2f}" for v in values) + " |" for name, values in marginal.iterrows()]
    return (
        "marginal on-target gain per 1k tokens\n\n| distilled | "
        + header
        + " |\n"
        + "|"
        + " --- |" * (len(budgets) + 1)
        + "\n"
        + "\n".join(rows)
        + "\n"
    )


GRID_SPLITS = ("fixed:", "tilted:")  # the variants of the fixed splits a grid sweep runs


def with_grid(table: pd.DataFrame) -> pd.DataFrame:
    """Replace the fixed splits (`fixed:` and `tilted:` variants) by `grid`: for each task and budget, the runs of
    the split with the best mean task utility on the dev split, reported by their eval scores (choosing on eval
    would leak the test items into the pick). The requirement vector is a point of every grid: task_static's runs
    compete too, and keep their own row."""
    is_split = table["variant"].str.startswith(GRID_SPLITS)
    fixed = table[is_split]
    if fixed.empty:
        return table
    candidates = pd.concat([fixed, table[table["variant"] == "task_static"]])
    has_dev = "dev_task_utility" in candidates.columns
    scored = candidates.dropna(subset=["dev_task_utility"]) if has_dev else candidates.iloc[:0]
    unscored = sorted(set(candidates["budget_tokens"]) - set(scored["budget_tokens"]))
    if unscored:
        raise CapdistillError(
            "plot: grid picks the best fixed split by its task utility on the dev split, but the fixed runs at "
            f"{', '.join(tokens(b) for b in unscored)} tokens have no dev scores (dev_task_utility, in records "
            "from this version of capdistill)"
        )
    setting = ["task", "budget_tokens"] if "task" in table else ["budget_tokens"]  # each task's splits are its own
    means = scored.groupby([*setting, "variant"])["dev_task_utility"].mean().reset_index()
    best = means.loc[means.groupby(setting)["dev_task_utility"].idxmax(), [*setting, "variant"]]
    chosen = candidates.merge(best, on=[*setting, "variant"]).assign(variant="grid")
    return pd.concat([table[~is_split], chosen], ignore_index=True)


Draw = Callable[[pd.DataFrame, str | None], tuple[Figure, str]]


def over_tasks_first(table: pd.DataFrame, baseline: str | None, draw: Draw) -> tuple[Figure, str]:
    """`draw` for a table of several tasks: the figure and tables of the mean over tasks (the paper's average
    utility over tasks, paired by seed), then each task's own tables; a one-task table is drawn as it is."""
    tasks = sorted(table["task"].unique()) if "task" in table else []
    if len(tasks) < 2:
        return draw(table, baseline)
    fig, text = draw(over_tasks(table), baseline)
    parts = [
        f"## mean over {len(tasks)} tasks ({', '.join(tasks)})\n\neach seed's runs averaged over the tasks, "
        f"seeds as the paired units; {text}"
    ]
    for task in tasks:
        part = table[table["task"] == task]
        own = baseline if baseline in set(part["variant"]) and part["variant"].nunique() > 1 else None
        parts.append(f"\n## task {task}\n\n" + report(part, "variant", own, paired(part, own) if own else None))
    return fig, "".join(parts)


# how each figure of `FIGURES` is drawn (a test checks that the two name the same figures)
DRAW: dict[str, Draw] = {
    "budget_curves": lambda t, b: over_tasks_first(
        with_grid(t), b, lambda u, c: curves(u, "variant", "performance vs token budget, per allocator", c)
    ),
    "losses": lambda t, b: curves(t, "loss", "performance vs token budget, per KD loss"),
    "schedules": lambda t, b: over_tasks_first(
        with_grid(t), b, lambda u, c: bars(u, "allocation schedules (grid: best fixed split on dev)", c)
    ),
    "ablation": lambda t, b: bars(t, "ReAD and its ablations", b),
    "transfer": lambda t, b: transfer(t, "cross-capability transfer"),
}


def declared_figure(table: pd.DataFrame) -> str:
    """The figure the table's experiment declares (its config's `report.figure`), for `plot` without --figure."""
    declared = sorted(set(table["figure"].dropna())) if "figure" in table else []
    if len(declared) != 1:
        found = f"declare {', '.join(declared)}" if declared else "declare no figure"
        raise CapdistillError(f"the table's runs {found}; choose one with --figure ({', '.join(FIGURES)})")
    return declared[0]


def plot(table: pd.DataFrame, figure: str, out_dir: Path, baseline: str | None = None) -> dict[str, Path | str]:
    """Draw `figure` from a collected table into `out_dir`; returns the file paths and the markdown table.

    `baseline`: the variant the allocator figures compare to by paired per-seed differences (default:
    `BASELINES`' when the table has it, else none: absolute values only).
    """
    if figure not in DRAW:
        raise CapdistillError(f"plot: --figure must be one of {', '.join(FIGURES)}, got {figure!r}")
    if table.empty:
        raise CapdistillError("plot: the table has no runs")
    missing = [c for c in ("variant", "budget_tokens", "seed") if c not in table]
    if missing:
        raise CapdistillError(f"plot: the table has no {missing[0]!r} column; plot a results.csv that collect wrote")
    if baseline is None:  # the default, when the table has it and something to pair with it
        variants = set(table["variant"])
        baseline = BASELINES.get(figure) if BASELINES.get(figure) in variants and len(variants) > 1 else None
    elif figure not in BASELINES:
        raise CapdistillError(
            f"plot: --baseline compares allocators; use it with --figure {', '.join(BASELINES)}, not {figure}"
        )
    try:
        fig, text = DRAW[figure](table, baseline)
    except KeyError as err:  # a column this figure reads (pandas names it, or a list of them)
        column = err.args[0] if err.args else ""
        column = column[0] if isinstance(column, list) and column else column
        column = str(column).removeprefix("Column not found: ")
        if column in table.columns:  # not a missing column: a bug, shown as one
            raise
        raise CapdistillError(f"plot: --figure {figure} needs a {column!r} column, which the table lacks") from None
    out: dict[str, Path | str] = {"markdown": text}
    for ext in ("png", "pdf"):
        path = Path(out_dir) / f"{figure}.{ext}"
        with atomic_file(path) as tmp:
            fig.savefig(tmp, format=ext, dpi=150)
        out[ext] = path
    plt.close(fig)
    out["md"] = Path(out_dir) / f"{figure}.md"
    atomic_write_text(out["md"], text)
    return out


def upload_to_wandb(table: pd.DataFrame, figure: str, files: dict[str, Any], project: str) -> None:
    """Log the figure and the tables to one aggregate W&B run of the sweep (offline unless WANDB_MODE says)."""
    import wandb  # only for --wandb

    group = str(table["experiment"].iloc[0]) if "experiment" in table else None
    values = {c: sorted(map(str, table[c].dropna().unique())) for c in ("variant", "loss", "task") if c in table}
    config = {
        "figure": figure,
        "experiment": group,
        "runs": len(table),
        "budget_tokens": sorted(int(b) for b in table["budget_tokens"].dropna().unique()),
        "seeds": sorted(int(s) for s in table["seed"].dropna().unique()),
        **values,
    }
    run = wandb.init(
        project=project,
        group=group,
        job_type="aggregate",
        name=f"{group}-{figure}",
        config=config,
        tags=["aggregate", f"figure={figure}", *(f"allocator={v}" for v in values.get("variant", []))],
        dir=str(Path(files["png"]).parent),
        mode=os.environ.get("WANDB_MODE", "offline"),
    )
    run.log({figure: wandb.Image(str(files["png"])), f"{figure}/runs": wandb.Table(dataframe=table)})
    run.finish()
