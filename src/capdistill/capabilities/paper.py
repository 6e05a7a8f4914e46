"""The paper's capability suite on standard lm-eval tasks: capability scores and prompt pools.

Each capability maps to lm-eval task, group or tag names; its score is the mean (0-100) of
its benchmarks, a benchmark's score the macro mean of its tasks' primary metric (the
first metric lm-eval reports for the task, unless `metrics` names one). Train prompt pools
are the tasks' train splits rendered by the task's own `doc_to_text`, without any prompt
that also occurs in an evaluation split. `data_files` points a task at local copies of its
dataset (offline clusters, tests); everything else is lm-eval's own task definition.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache, cached_property
from typing import Any

from capdistill.capabilities.base import Example
from capdistill.capabilities.pools import PoolSource
from capdistill.capabilities.real.humaneval_problems import TASK as HUMANEVAL_TASK
from capdistill.errors import CapdistillError


def _leaves(node: Any) -> Iterator[Any]:
    """The Task objects of a (nested) lm-eval task dict."""
    if isinstance(node, dict):
        for child in node.values():
            yield from _leaves(child)
    else:
        yield node


@cache
def task_manager(include_path: tuple[str, ...] = ()) -> Any:
    """lm-eval's task index (with extra task directories), built once per process: indexing its
    thousands of task YAMLs takes seconds, and loading tasks leaves the index unchanged."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=list(include_path) or None)


def primary_metric(results: dict[str, Any], task: str, metric: str | None = None) -> float:
    """A task's score in 0-100: `metric` (as lm-eval keys it, e.g. 'acc_norm,none') or its first metric."""
    reported = results[task]
    if metric is None:
        metric = next(k for k in reported if "," in k and "_stderr" not in k)
    if metric not in reported:
        raise CapdistillError(f"task {task} reports no metric {metric!r}; it reports {sorted(reported)}")
    return 100.0 * float(reported[metric])


@dataclass
class PaperSuite:
    benchmarks: dict[str, list[str]]  # capability -> lm-eval task/group/tag names
    metrics: dict[str, str] = field(default_factory=dict)  # task -> metric key
    data_files: dict[str, dict[str, str]] = field(default_factory=dict)  # task -> {split: local file}
    include_path: list[str] = field(default_factory=list)  # extra task directories (local tasks)
    max_gen_toks: int | None = None  # cap every generation task's length (quick probes); None: each task's own

    @property
    def task_manager(self) -> Any:
        return task_manager(tuple(self.include_path))

    @property
    def runs_code(self) -> bool:
        """Whether scoring executes model-written code: the sandboxed HumanEval task is among the benchmarks."""
        return any(HUMANEVAL_TASK in names for names in self.benchmarks.values())

    def check(self) -> None:
        """Every benchmark is a registered lm-eval name; local data only for single tasks (fails before compute)."""
        index = self.task_manager.task_index
        for capability, names in self.benchmarks.items():
            if not names:
                raise CapdistillError(f"capabilities.benchmarks.{capability} lists no benchmark")
            for name in names:
                if name not in index:
                    raise CapdistillError(
                        f"capabilities.benchmarks.{capability}: {name!r} is not an lm-eval task, group or tag"
                    )
        for name in self.data_files:
            entry = index.get(name)
            if entry is None or entry.kind.name not in ("TASK", "PY_TASK"):
                raise CapdistillError(
                    f"capabilities.data_files.{name}: local data needs a single lm-eval task "
                    "(list a group's tasks as benchmarks to give each its files)"
                )

    def _spec(self, name: str) -> Any:
        """A name, or the task built with its dataset pointed at local files."""
        if name not in self.data_files:
            return name
        files = dict(self.data_files[name])
        overrides = {"dataset_path": "json", "dataset_name": None, "dataset_kwargs": {"data_files": files}}
        for split in ("training", "validation", "test"):
            key = "train" if split == "training" else split
            overrides[f"{split}_split"] = key if key in files else None
        tm = self.task_manager
        try:
            return tm._factory.build(tm.task_index[name], overrides=overrides, registry=tm.task_index)
        except KeyError as err:  # the task reads a split (e.g. its few-shot split) that has no file
            raise CapdistillError(
                f"capabilities.data_files.{name}: lm-eval's {name} task reads split {err} which has no file; add one"
            ) from None

    @cached_property
    def tasks(self) -> dict[str, list[Any]]:
        """Benchmark -> its lm-eval Task objects (datasets loaded once, reused by pools and scoring)."""
        from lm_eval.tasks import get_task_dict

        self.check()
        out = {}
        for name in sorted({n for names in self.benchmarks.values() for n in names}):
            try:
                out[name] = list(_leaves(get_task_dict([self._spec(name)], self.task_manager)))
            except ConnectionError as err:
                raise CapdistillError(
                    f"benchmark {name}: its dataset is not available offline ({err}); download it while online "
                    f"or point capabilities.data_files.{name} at local files"
                ) from None
        return out

    def score(self, lm: Any, limit: int | None = None, chat: bool = False, capped: bool = True) -> dict[str, Any]:
        """`probe` score per capability (0-100) and every benchmark's score, through `simple_evaluate`.

        `limit` items per task; `capped` applies `max_gen_toks` (per-round probes), else each
        task generates as long as its own config says (the final evaluation).
        """
        from lm_eval import simple_evaluate

        tasks = [t for ts in self.tasks.values() for t in ts]
        results = simple_evaluate(
            model=lm,
            tasks=tasks,
            task_manager=self.task_manager,
            limit=limit,
            apply_chat_template=chat,
            gen_kwargs=f"max_gen_toks={self.max_gen_toks}" if capped and self.max_gen_toks else None,
            bootstrap_iters=0,
            log_samples=False,
            verbosity="ERROR",
        )["results"]
        bench = {
            name: sum(primary_metric(results, t.config.task, self.metrics.get(t.config.task)) for t in ts) / len(ts)
            for name, ts in self.tasks.items()
        }
        probe = {c: sum(bench[n] for n in names) / len(names) for c, names in self.benchmarks.items()}
        return {"probe": probe, "benchmarks": bench}

    def pools(self, probe_size: int, dev_size: int) -> dict[str, PoolSource]:
        """One pool source per capability: train prompts from train splits, probes from evaluation docs,
        dev prompts (the allocator's signal) held out of the train docs (at most half of them)."""
        out = {}
        for capability, names in self.benchmarks.items():
            train, probe = [], []
            for task in (t for n in names for t in self.tasks[n]):
                name = task.config.task
                if task.has_training_docs():
                    train += [_example(capability, task, d, name) for d in task.training_docs()]
                probe += [_example(capability, task, d, name) for d in task.eval_docs]
            if not train:
                raise CapdistillError(
                    f"capability {capability}: none of its benchmarks ({', '.join(names)}) has a train split "
                    "to draw prompts from; add a benchmark with one"
                )
            dev = train[: min(dev_size, len(train) // 2)]  # PoolSource drops them from train
            source = PoolSource(capability, {"train": train, "probe": probe, "dev": dev})
            source.splits["probe"] = source.sample("probe", probe_size, 0, (1,))
            out[capability] = source
        return out


def _example(capability: str, task: Any, doc: dict[str, Any], template: str) -> Example:
    prompt = task.doc_to_text(doc)
    target = task.doc_to_target(doc)
    if isinstance(target, int) and task.OUTPUT_TYPE == "multiple_choice":
        target = task.doc_to_choice(doc)[target]
    return Example(capability, str(prompt), str(target), str(target), 1, template)
