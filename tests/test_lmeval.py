"""lm-eval's exact match on the exported world sets equals the project's own checker on the same items."""

from __future__ import annotations

from pathlib import Path

from capdistill.components import world_sources
from capdistill.evaluation.lmeval import evaluate_with_lmeval, export_tasks
from capdistill.evaluation.lmeval_tasks import hf_lm, local_task_manager
from capdistill.evaluation.probes import probe_accuracy
from capdistill.prompting import prompt_ids
from capdistill.world.build import load_entry

ASSETS = Path(__file__).resolve().parents[1] / "src" / "capdistill" / "assets" / "worlds"


def test_lmeval_scores_match_the_checkers(make_cfg, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    sources = world_sources(make_cfg())
    student = load_entry(next(ASSETS.glob("student-*")))  # weak: scores strictly between 0 and 100
    sets = {n: sources.build_probes[n][:16] for n in ("math", "tool_use", "safety")}
    sets["word_problem_formatted"] = sources.build_task_sets["word_problem_formatted"][:16]
    tasks = export_tasks(sources.spec, sets, tmp_path, bos=student.tokenizer.bos_token)
    got = evaluate_with_lmeval(student.model, student.tokenizer, tmp_path, tasks)
    ours = {
        f"capdistill_{n}": probe_accuracy(student.model, student.tokenizer, sources.all_sources[n], ex)[0]
        for n, ex in sets.items()
    }
    assert got == ours
    assert any(0 < v < 100 for v in ours.values())  # not a trivially all-right / all-wrong model


def test_lmeval_conditions_the_model_on_exactly_the_probe_tokens(make_cfg, tmp_path: Path, monkeypatch) -> None:
    """The context lm-eval builds and encodes is `prompt_ids`: BOS, prompt, answer cue (a missing BOS
    leaves a trained student's answers to drift)."""
    from lm_eval.tasks import get_task_dict

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    sources = world_sources(make_cfg())
    student = load_entry(next(ASSETS.glob("student-*")))
    examples = sources.build_probes["safety"][:8]
    (task,) = export_tasks(sources.spec, {"safety": examples}, tmp_path, bos=student.tokenizer.bos_token)
    loaded = get_task_dict([task], local_task_manager(tmp_path))[task]
    lm = hf_lm(student.model, student.tokenizer)
    for doc, example in zip(loaded.test_docs(), examples):
        ids = lm.tok_batch_encode([loaded.doc_to_text(doc)])[0][0].tolist()
        assert ids == prompt_ids(student.tokenizer, example.prompt)
