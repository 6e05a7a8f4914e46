"""`capabilities=paper`: standard lm-eval tasks as capabilities, offline on local stand-in files.

The files under tests/data/paper have the fields of GSM8K and ARC-Challenge; lm-eval's own
`gsm8k` and `arc_challenge` task definitions (prompts, targets, metrics) run on them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from lm_eval.api.model import LM

from capdistill.capabilities.paper import PaperSuite
from capdistill.components import validate, world_sources
from capdistill.distill.run import distill
from capdistill.errors import CapdistillError
from capdistill.results.record import check_record
from capdistill.world.build import world_tokenizer
from conftest import compose_config
from hf_models import save_tiny

DATA = Path(__file__).parent / "data" / "paper"
FILES = {t: {s: str(DATA / f"{t}_{s}.jsonl") for s in ("train", "test")} for t in ("gsm8k", "arc_challenge")}


class OracleLM(LM):
    """Answers GSM8K right on questions whose answer is even, and always ranks ARC's key choice first."""

    def generate_until(self, requests):
        answers = [r.doc["answer"].split("####")[-1].strip() for r in requests]
        return [f" The answer is #### {a}" if int(a) % 2 == 0 else " #### -1" for a in answers]

    def loglikelihood(self, requests):
        def right(r) -> bool:
            choices = r.doc["choices"]
            return r.args[1].strip() == choices["text"][choices["label"].index(r.doc["answerKey"])]

        return [(0.0 if right(r) else -10.0, True) for r in requests]

    def loglikelihood_rolling(self, requests):
        raise NotImplementedError


@pytest.fixture(scope="module")
def suite() -> PaperSuite:
    return PaperSuite(
        {"math": ["gsm8k"], "reasoning": ["arc_challenge"], "both": ["gsm8k", "arc_challenge"]}, data_files=FILES
    )


def test_capability_score_is_the_mean_of_its_benchmarks(suite: PaperSuite) -> None:
    gsm = suite.tasks["gsm8k"][0]
    even = [int(gsm.doc_to_target(d).split("####")[-1]) % 2 == 0 for d in gsm.test_docs()]
    expected_math = 100 * sum(even) / len(even)
    assert 0 < expected_math < 100
    scores = suite.score(OracleLM())
    assert scores["benchmarks"] == pytest.approx({"gsm8k": expected_math, "arc_challenge": 100.0})
    assert scores["probe"] == pytest.approx(
        {"math": expected_math, "reasoning": 100.0, "both": (expected_math + 100.0) / 2}
    )


def test_prompt_pools_are_the_train_splits_rendered_by_lmeval(suite: PaperSuite) -> None:
    pools = suite.pools(probe_size=2, dev_size=4)
    gsm = suite.tasks["gsm8k"][0]
    train = {gsm.doc_to_text(d) for d in gsm.training_docs()}
    held_out = {gsm.doc_to_text(d) for d in gsm.test_docs()}
    prompts = {e.prompt for e in pools["math"].splits["train"]}
    assert prompts and prompts <= train and not prompts & held_out  # decontaminated
    dev = {e.prompt for e in pools["math"].splits["dev"]}
    assert dev and dev <= train and not dev & prompts  # the proxy's prompts are held out of training
    assert all(p.startswith("Question: ") and p.endswith("\nAnswer:") for p in prompts)  # lm-eval's template
    assert {e.prompt for e in pools["math"].splits["probe"]} <= held_out and len(pools["math"].splits["probe"]) == 2
    # an ARC probe's reference response is the key's text, not its index
    arc_probe = pools["reasoning"].splits["probe"][0]
    assert not arc_probe.response.isdigit()


def test_bad_suites_fail_before_compute() -> None:
    with pytest.raises(CapdistillError, match="benchmark gpqa_main_zeroshot: its dataset is not available offline"):
        PaperSuite({"reasoning": ["gpqa_main_zeroshot"]}).tasks  # noqa: B018
    with pytest.raises(CapdistillError, match="'gsm9k' is not an lm-eval task"):
        PaperSuite({"math": ["gsm9k"]}).check()
    with pytest.raises(CapdistillError, match="data_files.mmlu_pro: local data needs a single lm-eval task"):
        PaperSuite({"general": ["mmlu_pro"]}, data_files={"mmlu_pro": {"test": "x"}}).check()
    few_shot = PaperSuite({"math": ["gsm8k"]}, data_files={"gsm8k": {"test": FILES["gsm8k"]["test"]}})
    with pytest.raises(CapdistillError, match="data_files.gsm8k: lm-eval's gsm8k task reads split 'train'"):
        few_shot.pools(2, 2)  # gsm8k's 5-shot examples come from its train split
    no_train = PaperSuite(
        {"reasoning": ["arc_challenge"]}, data_files={"arc_challenge": {"test": FILES["arc_challenge"]["test"]}}
    )
    with pytest.raises(
        CapdistillError, match="capability reasoning: none of its benchmarks \\(arc_challenge\\) has a train"
    ):
        no_train.pools(2, 2)


@pytest.fixture(scope="module")
def bpe_pair(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny llama teacher and student sharing a byte-level BPE tokenizer (any text encodes)."""
    root = tmp_path_factory.mktemp("paper-hf")
    sources = world_sources(compose_config(["experiment=micro"], root / "run", root / "cache"))
    bpe = world_tokenizer(sources, "bpe", 512)
    return {
        role: save_tiny(root / role, "llama", bpe, hidden, seed=seed, positions=1024)
        for role, hidden, seed in (("teacher", 32, 1), ("student", 16, 2))
    }


def paper_overrides(pair: dict[str, Path]) -> list[str]:
    files = [f"+capabilities.data_files.{t}.{s}={p}" for t, splits in FILES.items() for s, p in splits.items()]
    return [
        "experiment=micro",
        "capabilities=paper",
        "capabilities.names=[math,reasoning]",
        "capabilities.benchmarks.math=[gsm8k]",
        "capabilities.benchmarks.reasoning=[arc_challenge]",
        "task=paper/math_reasoning",
        "capabilities.probe_size=4",
        "capabilities.max_gen_toks=8",
        "budget.rounds=2",
        "budget.total_tokens=300",  # the fixture pools hold 16 train prompts each
        "allocator=read",
        "allocator.top_k=2",
        *files,
        *(f"{role}=hf" for role in pair),
        *(f"{role}.path={path}" for role, path in pair.items()),
        *(f"{role}.dtype=float32" for role in pair),
    ]


def test_distill_runs_on_the_paper_suite(bpe_pair, tmp_path: Path) -> None:
    cfg = compose_config(paper_overrides(bpe_pair), tmp_path / "run", tmp_path / "cache")
    validate(cfg)
    record = distill(cfg)
    check_record(record)
    assert 0 < record["budget"]["spent_tokens"] <= 300
    for scores in (record["final"], record["lmeval"], record["reference"]["teacher"]):
        assert set(scores["probe"]) == {"math", "reasoning"}
        assert 0 <= scores["task_utility"] <= 100
    final = record["final"]["probe"]
    assert record["final"]["task_utility"] == pytest.approx(0.6 * final["math"] + 0.4 * final["reasoning"])
    assert set(record["lmeval"]["tasks"]) == {"gsm8k", "arc_challenge"}


def test_paper_world_refuses_synthetic_models_and_missing_files(tmp_path: Path, bpe_pair) -> None:
    overrides = paper_overrides(bpe_pair)
    synthetic = [o for o in overrides if not o.startswith(("teacher", "student"))]
    with pytest.raises(CapdistillError, match="capabilities=paper needs HF models: teacher=synthetic"):
        validate(compose_config(synthetic, tmp_path / "run", tmp_path / "cache"))
    missing = [*overrides, "++capabilities.data_files.gsm8k.train=/nonexistent.jsonl"]
    with pytest.raises(CapdistillError, match="capabilities.data_files.gsm8k.train: no file /nonexistent.jsonl"):
        validate(compose_config(missing, tmp_path / "run", tmp_path / "cache"))
