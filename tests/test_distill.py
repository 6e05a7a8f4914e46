"""`capdistill distill` end to end on the micro world: budget, record, losses, resume, loggers, HF models."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf

from capdistill.capabilities.base import ROLES, split_of
from capdistill.capabilities.sources import WorldSources
from capdistill.components import model_requests, validate, world_sources
from capdistill.distill import run as run_module
from capdistill.distill.batches import DistillDataModule, SupervisedBatches
from capdistill.distill.loggers import RunLogger
from capdistill.distill.module import DistillationModule
from capdistill.distill.run import distill
from capdistill.errors import CapdistillError
from capdistill.losses import ForwardKLLoss, SFTLoss
from capdistill.results.identity import run_identity, same_run
from capdistill.results.record import RECORD_FILE, check_record
from capdistill.supervision.slices import Generation, PromptStream, collect_round
from capdistill.training.optim import OptimizerSettings
from capdistill.world.build import ensure_model
from conftest import compose_config
from hf_models import save_tiny_models
from wandb_files import read_wandb_run

FIXED = ("allocator=fixed", "allocator.weights={math:0.5,code:0.5}")


def test_fixed_split_spends_within_budget_and_writes_the_record(run_micro) -> None:
    record, out = run_micro(*FIXED)
    check_record(record)
    assert json.loads((out / RECORD_FILE).read_text()) == json.loads(json.dumps(record))
    budget = record["budget"]
    assert budget["total_tokens"] == 5000 and 0 < budget["spent_tokens"] <= 5000
    assert set(k for k, v in budget["spent_by_capability"].items() if v) == {"math", "code"}
    for entry in record["rounds"]:
        for name, spent in entry["spent_by_capability"].items():
            assert spent <= entry["allotted_by_capability"][name]
        assert entry["allocation"]["math"] == entry["allocation"]["code"] == 0.5
    assert budget["teacher_generated_tokens"] >= budget["spent_tokens"]
    assert budget["student_trained_tokens"] > budget["spent_tokens"]  # prompts are processed too
    base = record["reference"]["student_base"]["probe_loglik"]
    assert record["final"]["probe_loglik"] != base  # the student changed
    # every number names its split: eval exact match reports, the dev proxy decides
    assert record["final"]["splits"] == {
        "probe": "eval",
        "task_utility": "eval",
        "n": "eval",
        "probe_loglik": "dev",
        "task_loglik": "dev",
    }
    assert record["final_dev"]["split"] == "dev" and 0 <= record["final_dev"]["task_utility"] <= 100
    assert record["final"]["n"]["task"] == 8 and set(record["final"]["n"]) == {*record["final"]["probe"], "task"}
    assert set(record["reference"]["teacher"]) >= {"probe", "task_utility"}
    timing = record["timing"]
    assert all(timing[k] >= 0 for k in ("generation_s", "training_s", "probing_s", "proxy_s", "eval_s", "total_s"))
    assert timing["decision_s"] == pytest.approx(timing["allocator_s"] + timing["proxy_s"])
    assert (out / "logs" / "version_0" / "metrics.csv").is_file()
    # the final evaluation through lm-eval agrees with the project's probes on the same student
    lmeval = record["lmeval"]
    assert (lmeval["probe"], lmeval["task_utility"]) == (record["final"]["probe"], record["final"]["task_utility"])
    assert sorted(p.name for p in (out / "lmeval").glob("*.yaml")) == sorted(f"{t}.yaml" for t in lmeval["tasks"])
    # only the last round keeps its student weights
    assert [p.name for p in sorted((out / "rounds").glob("*/student"))] == ["student"]
    assert (out / "rounds" / "round-001" / "student" / "config.json").is_file()


def test_weighted_task_utility_is_the_requirement_weighted_probe_mean(run_micro) -> None:
    record, _ = run_micro(*FIXED, "task.source=weighted", "budget.rounds=1")
    requirements = record["config"]["task"]["requirements"]
    for scores in (record["final"], record["lmeval"], record["reference"]["student_base"]):
        expected = sum(w * scores["probe"][c] for c, w in requirements.items()) / sum(requirements.values())
        assert scores["task_utility"] == pytest.approx(expected)
    assert record["lmeval"]["probe"] == record["final"]["probe"]


def test_a_replay_slice_spends_its_fraction_on_every_capability_and_counts_in_the_budget(run_micro) -> None:
    """budget.replay: a quarter of each round spread evenly over all capabilities; the allocator's own split is what
    the round records as its allocation, and collect counts only what it chose as on target."""
    from capdistill.results.collect import record_row

    record, _ = run_micro("allocator=single", "allocator.capability=math", "budget.replay=0.25", "budget.rounds=2")
    names = record["config"]["capabilities"]["names"]
    for entry in record["rounds"]:
        assert entry["allocation"] == {c: float(c == "math") for c in names}
        allotted, shares = entry["allotted_tokens"], entry["allotted_by_capability"]
        assert sum(shares.values()) == allotted
        for c in names:  # largest remainder: within a token of the mixed split
            assert abs(shares[c] - allotted * (0.75 * (c == "math") + 0.25 / len(names))) < 1
    spent = record["budget"]["spent_by_capability"]
    assert all(spent[c] > 0 for c in names) and sum(spent.values()) == record["budget"]["spent_tokens"] <= 5000
    row = record_row(record, "r")
    assert row["variant"] == "single:math+replay=0.25"
    assert row["on_target_change"] == row["delta/math"]
    off = [row[f"delta/{c}"] for c in names if c != "math"]
    assert row["off_target_change"] == pytest.approx(sum(off) / len(off))


def test_dev_probe_scores_every_capability_on_dev_for_the_student_and_its_base(run_micro) -> None:
    """evaluation.dev_probe: the final student's and the base's exact match on every capability's dev set; a
    weighted task's dev utility is their requirement-weighted mean (the same items), and collect turns them into
    the transfer statistics on dev in points."""
    from capdistill.results.collect import record_row

    record, _ = run_micro(*FIXED, "task.source=weighted", "budget.rounds=1", "evaluation.dev_probe=true")
    names = record["config"]["capabilities"]["names"]
    final, base = record["final_dev"]["probe"], record["reference"]["student_base"]["dev_probe"]
    assert sorted(final) == sorted(base) == sorted(names)
    assert all(0 <= v <= 100 for v in [*final.values(), *base.values()])
    requirements = record["config"]["task"]["requirements"]
    expected = sum(w * final[c] for c, w in requirements.items()) / sum(requirements.values())
    assert record["final_dev"]["task_utility"] == pytest.approx(expected)
    row = record_row(record, "r")
    assert row["dev_em_delta/math"] == pytest.approx(final["math"] - base["math"])
    assert 0 <= row["dev_em_negative_transfer_rate"] <= 100


def test_resume_after_a_crash_repeats_no_round(run_micro, monkeypatch: pytest.MonkeyPatch) -> None:
    real, calls = run_module.train_round, []

    def crash_in_round_two(cfg, index, *args, **kwargs):
        calls.append(index)
        if index == 1 and calls.count(1) == 1:
            raise RuntimeError("killed")
        return real(cfg, index, *args, **kwargs)

    monkeypatch.setattr(run_module, "train_round", crash_in_round_two)
    with monkeypatch.context() as killed:
        killed.setattr(RunLogger, "finish", lambda self: None)  # as after kill -9: nothing finalises the logger
        with pytest.raises(RuntimeError, match="killed"):
            run_micro(*FIXED)
    # the same output directory (make_cfg gives every call in a test the same run dir)
    record, out = run_micro(*FIXED)
    first = (out / "logs" / "version_0" / "metrics.csv").read_text().splitlines()
    assert "round" in first[0].split(",") and len(first) > 2  # the killed invocation's rows were kept
    assert calls == [0, 1, 1]
    assert [e["round"] for e in record["rounds"]] == [0, 1]
    saved = json.loads((out / "rounds" / "round-000" / "round.json").read_text())["entry"]
    assert record["rounds"][0] == saved


def test_resume_refuses_a_different_config(run_micro, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run_module, "train_round", _crash_on_round(run_module.train_round, 1))
    with pytest.raises(RuntimeError):
        run_micro(*FIXED)
    with pytest.raises(CapdistillError, match="different config \\(allocator.name, allocator.weights\\)"):
        run_micro("allocator=uniform")


def test_resume_accepts_rounds_saved_before_a_config_field_was_added(
    run_micro, make_cfg, micro_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rounds written by a version whose schema lacked a field that is unset now still resume."""
    real = run_module.train_round
    monkeypatch.setattr(run_module, "train_round", _crash_on_round(real, 1))
    with pytest.raises(RuntimeError):
        run_micro(*FIXED)
    path = Path(make_cfg("experiment=micro", *FIXED, cache_dir=micro_cache).paths.output_dir) / "rounds"
    path = path / "round-000" / "round.json"
    saved = json.loads(path.read_text())
    del saved["config"]["student"]["arch"]["num_kv_heads"]  # as a version without grouped-query attention wrote it
    saved["fingerprint"] = "0" * 16
    path.write_text(json.dumps(saved))
    calls: list[int] = []

    def counting(cfg, index, *args, **kwargs):
        calls.append(index)
        return real(cfg, index, *args, **kwargs)

    monkeypatch.setattr(run_module, "train_round", counting)
    record, _ = run_micro(*FIXED)
    assert calls == [1] and record["rounds"][0] == saved["entry"]


def test_a_process_that_does_not_lead_resumes_trains_along_and_writes_nothing(
    run_micro, make_cfg, micro_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Node 1 of a multi-node job (or a copy Lightning started for another device) runs the rounds in lockstep
    with node 0's process, from node 0's saved rounds, and leaves node 0's files as they are."""
    real = run_module.train_round
    monkeypatch.setattr(run_module, "train_round", _crash_on_round(real, 1))
    with pytest.raises(RuntimeError):
        run_micro(*FIXED, "evaluation.lmeval=true")
    monkeypatch.setattr(run_module, "train_round", real)
    with monkeypatch.context() as node:
        node.setenv("NODE_RANK", "1")
        out = Path(make_cfg("experiment=micro", *FIXED, cache_dir=micro_cache).paths.output_dir)
        written = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
        along, _ = run_micro(*FIXED, "evaluation.lmeval=true")
        assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == written
    assert not (out / "record.json").exists() and not (out / "rounds" / "round-001").exists()
    record, _ = run_micro(*FIXED, "evaluation.lmeval=true")  # node 0's process
    assert [e["round"] for e in along["rounds"]] == [0, 1]
    assert "lmeval" not in along and record["lmeval"]  # lm-eval: the leading process alone scores the student
    assert untimed(along) == {k: v for k, v in untimed(record).items() if k != "lmeval"}


def untimed(record: dict) -> dict:
    """A record without its wall-clock timings, which no two runs share."""
    rounds = [{k: v for k, v in e.items() if k != "timing"} for e in record["rounds"]]
    return {k: v for k, v in record.items() if k != "timing"} | {"rounds": rounds}


def _crash_on_round(real, crash_index: int):
    def train_round(cfg, index, *args, **kwargs):
        if index == crash_index:
            raise RuntimeError("killed")
        return real(cfg, index, *args, **kwargs)

    return train_round


# The first and the last training loss of one micro round (6 epochs at lr 1e-2) per loss family, pinned as
# torchtune's recipe tests pin theirs: a change to a loss, the batching or the optimizer moves them. Measured at
# 1, 2 and 4 torch threads (the micro world rebuilt at each): equal to all printed digits but topk's last
# loss, which moved by 1.0e-7 relative; the tolerance is 100 times that.
PINNED_LOSSES = {
    "sft": (4.958298206329346, 0.20789290964603424),
    "fkl": (0.5970082879066467, 0.0020831956062465906),
    "rkl": (0.5399205088615417, 0.0022611217573285103),
    "jsd": (0.1314990222454071, 0.0006471361848525703),
    "tvd": (0.47049498558044434, 0.013658273033797741),
    "topk": (1.5250790119171143, 0.03623960167169571),
    "sampled": (1.825284719467163, 1.2430037260055542),
    "uld": (6.023116111755371, 1.7090649604797363),
    "mlot": (5.217763423919678, 0.37673887610435486),
}
PIN_RTOL = 1e-5
# Measured: tvd's last loss is 0.0136583 on the machines above and 0.0140083 (+2.6%) on an AMD EPYC with
# AVX-512, deterministic on each; its first loss, and every other loss, agree within PIN_RTOL. The likely
# reason: tvd's gradient is the sign of p - q, which a rounding difference between CPU kernels flips where p
# and q nearly agree, and 6 epochs carry the flips on.
LAST_RTOL = {"tvd": 5e-2}


def assert_pinned(record: dict, loss: str) -> None:
    curve = record["rounds"][0]["train_loss"]
    first, last = PINNED_LOSSES[loss]
    assert curve["last"] < curve["first"]
    assert curve["first"] == pytest.approx(first, rel=PIN_RTOL)
    assert curve["last"] == pytest.approx(last, rel=LAST_RTOL.get(loss, PIN_RTOL))


@pytest.mark.parametrize("loss", ["sft", "fkl", "rkl", "jsd", "tvd", "topk", "sampled"])
def test_each_same_tokenizer_loss_trains_to_its_pinned_values(run_micro, loss: str) -> None:
    record, _ = run_micro(*FIXED, f"loss={loss}", "budget.rounds=1", "distill.epochs=6", "distill.lr=1e-2")
    assert_pinned(record, loss)


@pytest.mark.parametrize("loss", ["uld", "mlot"])
def test_cross_tokenizer_losses_train_across_tokenizers_to_their_pinned_values(run_micro, loss: str) -> None:
    overrides = ("student=synthetic-micro-bpe", f"loss={loss}", "budget.rounds=1", "distill.epochs=6")
    record, _ = run_micro(*FIXED, *overrides, "distill.lr=1e-2")
    assert_pinned(record, loss)


def test_same_tokenizer_loss_across_tokenizers_fails_before_loading(run_micro, monkeypatch) -> None:
    monkeypatch.setattr(run_module, "load_role", _forbidden)
    with pytest.raises(CapdistillError, match="share a tokenizer.*uld"):
        run_micro(*FIXED, "student=synthetic-micro-bpe", "loss=fkl")


def _forbidden(*args, **kwargs):
    raise AssertionError("a model was loaded")


def test_budget_smaller_than_one_example_fails_before_generation(run_micro, monkeypatch) -> None:
    monkeypatch.setattr(run_module, "generate_round", _forbidden)
    with pytest.raises(CapdistillError, match="no response fits"):  # refused by the config check now
        run_micro(*FIXED, "budget.total_tokens=3")


def test_wandb_offline_writes_an_offline_run(run_micro, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    _, out = run_micro(*FIXED, "logger=wandb", "budget.rounds=1")
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
    import wandb

    assert wandb.run is None  # finished: the next job of a multirun starts its own run
    run = read_wandb_run(next(runs[0].glob("*.wandb")))
    assert run["config"]["budget"]["total_tokens"] == 5000 and run["config"]["budget"]["label"] == "5k"
    assert run["metrics"]["probe/*"] == run["metrics"]["round/*"] == "round"  # the round is the x-axis
    base, last = run["history"][0], run["history"][-1]
    assert base["round"] == 0 and base["tokens/cumulative"] == 0 and "probe/math" in base  # the student base
    assert last["round"] == 1 and 0 < last["tokens/cumulative"] <= 5000 and "timing/training_s" in last
    summary = run["summary"]
    assert {"reference/teacher/task_utility", "reference/student_base/task_utility", "final/task_utility"} <= set(
        summary
    )
    assert summary["budget/total_tokens"] == 5000 and "timing/total_s" in summary


def math_examples(sources: WorldSources, teacher, student, tokens: int) -> list:
    """`tokens` of teacher-written math supervision."""
    stream = {"math": PromptStream(sources.capabilities["math"], "t", sources.difficulties)}
    (piece,) = collect_round(
        {"math": tokens}, stream, {}, teacher.model, teacher.tokenizer, student.tokenizer, Generation(max_new_tokens=16)
    )
    return piece.examples


def test_teacher_is_frozen_and_outside_the_student_checkpoint(micro_cache: Path, make_cfg) -> None:
    cfg = make_cfg("experiment=micro", cache_dir=micro_cache)
    sources = world_sources(cfg)
    teacher = ensure_model(model_requests(cfg)["teacher"], sources, Path(cfg.paths.output_dir))
    student = ensure_model(model_requests(cfg)["student"], sources, Path(cfg.paths.output_dir))
    before = {k: v.clone() for k, v in teacher.model.state_dict().items()}
    examples = math_examples(sources, teacher, student, 400)
    module = DistillationModule(student.model, teacher.model, ForwardKLLoss(), OptimizerSettings(1e-2))
    trainer = pl.Trainer(
        accelerator="cpu", max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False
    )
    trainer.fit(module, datamodule=DistillDataModule(SupervisedBatches(examples, student.tokenizer, None, 8, seed=0)))
    assert all(torch.equal(before[k], v) for k, v in teacher.model.state_dict().items())
    assert not any(p.requires_grad for p in teacher.model.parameters())
    assert not any(k.startswith("teacher") for k in module.state_dict())
    optimized = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    assert not optimized & {id(p) for p in teacher.model.parameters()}
    assert optimized <= {id(p) for p in student.model.parameters()}


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf")
    sources = world_sources(compose_config(["experiment=micro"], root / "run", root / "cache"))
    return save_tiny_models(root, sources)


def hf_pair(tiny_hf: dict[str, Path], teacher: str, student: str) -> tuple[str, ...]:
    return (
        "teacher=hf",
        f"teacher.path={tiny_hf[teacher]}",
        "teacher.dtype=float32",
        "student=hf",
        f"student.path={tiny_hf[student]}",
        "student.dtype=float32",
    )


@pytest.mark.parametrize(
    ("student", "loss"),
    [("llama-student", "fkl"), ("llama-student", "sft"), ("gpt2-student", "uld"), ("gpt2-student", "mlot")],
)
def test_tiny_random_hf_pair(run_micro, tiny_hf, student: str, loss: str) -> None:
    record, out = run_micro(*FIXED, *hf_pair(tiny_hf, "llama-teacher", student), f"loss={loss}", "budget.rounds=1")
    check_record(record)
    assert 0 < record["budget"]["spent_tokens"] <= 5000
    assert (out / "rounds" / "round-000" / "student" / "config.json").is_file()
    assert record["lmeval"]["probe"] == record["final"]["probe"]


def test_hf_same_tokenizer_loss_across_tokenizers_fails(run_micro, tiny_hf) -> None:
    with pytest.raises(CapdistillError, match="share a tokenizer"):
        run_micro(*FIXED, *hf_pair(tiny_hf, "llama-teacher", "gpt2-student"), "loss=jsd")


def test_missing_model_path_fails_in_validation(make_cfg, micro_cache: Path) -> None:
    cfg = make_cfg("experiment=micro", "teacher=hf", "teacher.path=/nonexistent/model", cache_dir=micro_cache)
    with pytest.raises(CapdistillError, match="teacher.path /nonexistent/model does not exist"):
        validate(cfg)


def test_read_runs_three_steps_and_records_its_decisions(run_micro) -> None:
    record, _ = run_micro("allocator=read", "task=synthetic/tool_math", "budget.rounds=3", "budget.total_tokens=6k")
    check_record(record)
    assert len(record["rounds"]) == 3
    for entry in record["rounds"]:
        decision, update = entry["decision"], entry["update"]
        assert decision["chosen"] == pytest.approx(entry["allocation"])
        assert decision["essential"][:2] == ["math", "tool_use"]
        assert set(update) >= {"reward", "gain", "spill", "cost", "delta_loglik"}


def test_read_learns_requirements_from_pilot_runs_and_resume_reuses_them(run_micro) -> None:
    overrides = ("allocator=read", "allocator.identify=learned", "allocator.pilots=2", "budget.rounds=2")
    record, out = run_micro(*overrides, "budget.total_tokens=4k", "allocator.pilot_fraction=0.25")
    found = record["identification"]
    assert found["tokens_per_pilot"] == 1000 and found["pilot_tokens"] == 2000
    assert len(found["interventions"]) == 2
    assert found["split"] == "dev"  # pilots are measured on the dev proxy, never on eval
    for pilot in found["interventions"]:
        assert sum(w > 0 for w in pilot["split"].values()) == 2
        assert set(pilot["delta_probe"]) == set(record["config"]["capabilities"]["names"])
    assert sum(found["requirements"].values()) == pytest.approx(1.0)
    essential = sorted(found["requirements"], key=lambda c: -found["requirements"][c])[:3]
    assert record["rounds"][0]["decision"]["essential"] == essential  # the bandit uses what it learned
    assert record["budget"]["spent_tokens"] <= 4000  # pilots are spent outside the budget
    saved = json.loads((out / "identification.json").read_text())
    assert saved["interventions"] == found["interventions"]
    # a resumed run fits the saved pilots instead of redoing them: mark them, drop the record, rerun
    for pilot in saved["interventions"]:
        pilot["delta_utility"] = 123.0
    (out / "identification.json").write_text(json.dumps(saved))
    (out / RECORD_FILE).unlink()
    again, _ = run_micro(*overrides, "budget.total_tokens=4k", "allocator.pilot_fraction=0.25")
    assert [p["delta_utility"] for p in again["identification"]["interventions"]] == [123.0, 123.0]


READ_DECIDING = ("allocator=read", "allocator.warmup=1", "budget.rounds=4", "budget.total_tokens=6k")


def decisions(record: dict) -> list[tuple]:
    """What a run decided, round by round: the splits, what the bandit weighed, and its state."""
    return [(e["allocation"], e["decision"], e["update"]) for e in record["rounds"]]


def run_in(make_cfg, cache: Path, out: Path, *overrides: str) -> dict:
    """A micro run in its own output directory (run_micro's is one per test)."""
    cfg = make_cfg("experiment=micro", *overrides, cache_dir=cache)
    cfg.paths.output_dir = str(out)
    validate(cfg)
    return distill(cfg)


def test_nothing_that_decides_reads_eval(make_cfg, micro_cache, tmp_path, monkeypatch) -> None:
    """Other eval items, and eval scores replaced by noise, leave every allocation of a run unchanged. Both runs
    score their references here (a copy of the world without the session's reference cache: a reference another
    process wrote, with other torch threads, differs in its last bits and so would the rewards)."""
    cache = tmp_path / "cache"
    shutil.copytree(micro_cache, cache, ignore=shutil.ignore_patterns("reference"))
    micro_cache = cache
    overrides = ("evaluation.checkpoints=[0.25,0.5,0.75]", "evaluation.lmeval=false")
    baseline = run_in(make_cfg, micro_cache, tmp_path / "baseline", *READ_DECIDING, *overrides)
    real_exact_match = run_module.exact_match
    scrambled: list[float] = []

    def noisy(model, tokenizer, sources, sets, task_source, batch_size, **kwargs):
        scores = real_exact_match(model, tokenizer, sources, sets, task_source, batch_size, **kwargs)
        if split_of(next(iter(sets.values()))[0].prompt) not in ROLES["eval"]:
            return scores  # the final dev score (after every decision) stays as it is
        scores["probe"] = {c: 100.0 * ((hash(c) + len(scrambled)) % 7) / 7 for c in scores["probe"]}
        scores["task_utility"] = 100.0 * (len(scrambled) % 5) / 5
        scrambled.append(scores["task_utility"])
        return scores

    monkeypatch.setattr(run_module, "exact_match", noisy)
    overrides = ("evaluation.checkpoints=[0.25,0.5,0.75]", "evaluation.lmeval=false", "evaluation.seed=7")
    perturbed = run_in(make_cfg, micro_cache, tmp_path / "perturbed", *READ_DECIDING, *overrides)
    assert len(scrambled) == 4  # every round was an eval checkpoint, each one perturbed
    assert [e["task_utility"] for e in perturbed["rounds"]] != [e["task_utility"] for e in baseline["rounds"]]
    assert not all(e["decision"].get("warmup") for e in baseline["rounds"])  # the bandit itself decided
    assert decisions(perturbed) == decisions(baseline)


def test_eval_items_differ_by_evaluation_seed(make_cfg, micro_cache: Path) -> None:
    """The perturbation above is real: another evaluation.seed draws other eval items."""
    cfg = make_cfg("experiment=micro", cache_dir=micro_cache)
    sources = world_sources(cfg)
    a, b = (sources.held_out_sets("eval", cfg.task.source, seed) for seed in (0, 7))
    assert any([e.prompt for e in a[n]] != [e.prompt for e in b[n]] for n in a)
    dev = sources.held_out_sets("dev", cfg.task.source, 0)
    assert not {e.prompt for s in dev.values() for e in s} & {e.prompt for s in a.values() for e in s}


def test_resume_continues_exactly(run_micro, make_cfg, micro_cache: Path, monkeypatch, tmp_path: Path) -> None:
    """A run killed after a round and resumed matches an uninterrupted one exactly, optimizer state included."""
    whole, _ = run_micro(*READ_DECIDING, "evaluation.lmeval=false")
    real = run_module.train_round
    monkeypatch.setattr(run_module, "train_round", _crash_on_round(real, 2))
    with pytest.raises(RuntimeError, match="killed"):
        run_in(make_cfg, micro_cache, tmp_path / "resumed", *READ_DECIDING, "evaluation.lmeval=false")
    assert (tmp_path / "resumed" / "rounds" / "round-001" / "optimizer.pt").is_file()
    assert not (tmp_path / "resumed" / "rounds" / "round-000" / "optimizer.pt").exists()  # only the last is kept
    monkeypatch.setattr(run_module, "train_round", real)
    resumed = run_in(make_cfg, micro_cache, tmp_path / "resumed", *READ_DECIDING, "evaluation.lmeval=false")
    drop = ("timing",)
    strip = [{k: v for k, v in e.items() if k not in drop} for e in resumed["rounds"]]
    assert strip == [{k: v for k, v in e.items() if k not in drop} for e in whole["rounds"]]
    assert resumed["final"] == whole["final"]


def test_checkpoint_rounds_are_the_first_rounds_reaching_each_fraction() -> None:
    assert run_module.checkpoint_rounds(20, [0.25, 0.5, 0.75]) == {4, 9, 14, 19}
    assert run_module.checkpoint_rounds(20, []) == {19}
    assert run_module.checkpoint_rounds(3, [0.1, 0.5]) == {0, 1, 2}


@pytest.mark.parametrize("scope", ["run", "round"])
def test_one_optimizer_spans_the_run_or_each_round(micro_cache: Path, make_cfg, scope: str) -> None:
    """scope=run: the AdamW built in the first fit is the one the second fit steps (its moments and step
    count carry over) and the learning rate follows budget progress; scope=round: a fresh one per fit."""
    cfg = make_cfg("experiment=micro", cache_dir=micro_cache)
    sources = world_sources(cfg)
    teacher = ensure_model(model_requests(cfg)["teacher"], sources, Path(cfg.paths.output_dir))
    student = ensure_model(model_requests(cfg)["student"], sources, Path(cfg.paths.output_dir))
    examples = math_examples(sources, teacher, student, 300)
    settings = OptimizerSettings(1e-2, warmup_steps=0, schedule="cosine", scope=scope)
    module = DistillationModule(student.model, None, SFTLoss(), settings)
    seen, lrs = [], []
    for start, end in ((0.0, 0.5), (0.5, 1.0)):
        data = DistillDataModule(SupervisedBatches(examples, student.tokenizer, None, 8, seed=0))
        module.begin_fit(start, end, len(data.dataset), 0)
        trainer = pl.Trainer(
            accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False
        )
        trainer.fit(module, datamodule=data)
        seen.append(module.optimizer)
        lrs.append(module.optimizer.param_groups[0]["lr"])
        steps = len(data.dataset)
    adam_steps = int(next(iter(module.optimizer.state.values()))["step"])
    if scope == "run":
        assert seen[0] is seen[1] and adam_steps == module.steps == 2 * steps
        assert lrs == pytest.approx([settings.lr_at(0, 0.5), settings.lr_at(0, 1.0)])  # half-way, then the floor
    else:
        assert seen[0] is not seen[1] and adam_steps == module.steps == steps
        assert lrs == pytest.approx([settings.lr_at(0, 1.0)] * 2)  # each fit its own cosine to the floor


def test_a_run_saved_before_components_were_instantiated_still_resumes(make_cfg) -> None:
    """A run recorded when the config named its allocator and loss by `name` (and carried every other
    allocator's and loss's fields as null) is the same run as its `_target_` config today: a relaunched
    sweep skips it, a killed one resumes. A changed option is still a change."""
    saved = json.loads((Path(__file__).parent / "data" / "pre_components_run.json").read_text())
    overrides = ["experiment=ablation", *saved["overrides"].split(",")]
    identity = run_identity(OmegaConf.to_container(make_cfg(*overrides), resolve=True, enum_to_str=True))
    assert saved["config"]["allocator"]["name"] == "read" and "_target_" not in saved["config"]["allocator"]
    assert same_run(saved["fingerprint"], saved["config"], identity) == []
    changed = run_identity(OmegaConf.to_container(make_cfg(*overrides, "allocator.beta=0.4"), resolve=True))
    assert same_run(saved["fingerprint"], saved["config"], changed) == ["allocator.beta"]
    other = run_identity(OmegaConf.to_container(make_cfg("experiment=ablation", "allocator=uniform"), resolve=True))
    assert "allocator.name" in same_run(saved["fingerprint"], saved["config"], other)
    student = run_identity(OmegaConf.to_container(make_cfg(*overrides, "student.seed=3"), resolve=True))
    assert same_run(saved["fingerprint"], saved["config"], student) == ["student.seed"]
    # an option added since keeps the saved run's identity at its default, and changes it when set
    probed = run_identity(OmegaConf.to_container(make_cfg(*overrides, "evaluation.dev_probe=true"), resolve=True))
    assert same_run(saved["fingerprint"], saved["config"], probed) == ["evaluation.dev_probe"]
    replayed = run_identity(OmegaConf.to_container(make_cfg(*overrides, "budget.replay=0.1"), resolve=True))
    assert same_run(saved["fingerprint"], saved["config"], replayed) == ["budget.replay"]
