"""Config composition: every group option composes and validates; bad input fails naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from capdistill.components import validate
from capdistill.config.hydra_setup import CONF_DIR
from capdistill.config.model_specs import ArchConf, Dtype, HFModel, SyntheticModel, WorldTrainConf, model_spec
from capdistill.config.schema import ConfigError
from capdistill.errors import CapdistillError

GROUPS = ["teacher", "student", "capabilities", "budget", "allocator", "loss", "trainer", "logger", "regime"]


def options(group: str) -> list[str]:
    return sorted(str(p.relative_to(CONF_DIR / group).with_suffix("")) for p in (CONF_DIR / group).rglob("*.yaml"))


def test_default_config_composes_and_validates(make_cfg) -> None:
    cfg = make_cfg()
    parts = validate(cfg)
    assert parts.settings.distill.lr == cfg.distill.lr and parts.optim.lr == cfg.distill.lr
    assert parts.models["teacher"].model is parts.settings.teacher  # converted once, the parts share it
    assert cfg.teacher.name == "synthetic"
    assert cfg.task.name == "word_problem_formatted"
    assert list(cfg.capabilities.names)[0] == "knowledge"


# options that need something from the user or the machine, and the one-line error without it
NEEDS = {
    "allocator=fixed": "needs allocator.weights",
    "allocator=tilted": "needs allocator.toward",
    "allocator=single": "needs allocator.capability",
    "teacher=hf": "teacher.path is not set",
    "student=hf": "student.path is not set",
    "capabilities=paper": "capabilities=paper needs HF models: teacher=synthetic",
    "capabilities=offline_real": "capabilities=offline_real needs HF models: teacher=synthetic",
    "task=paper/balanced": "task.requirements: unknown capability 'general'",  # needs capabilities=paper
}
if not torch.cuda.is_available():  # the Trainer is built once before compute: without a GPU, one line says so
    NEEDS |= {f"trainer={t}": "trainer: No supported gpu backend found" for t in ("gpu", "ddp", "fsdp")}


@pytest.mark.parametrize("group", GROUPS + ["task"])
def test_every_group_option_composes_and_validates(make_cfg, group: str) -> None:
    for option in options(group):
        cfg = make_cfg(f"{group}={option}")
        needle = NEEDS.get(f"{group}={option}")
        hub = group in ("teacher", "student") and cfg[group]._target_.endswith(".HFModel")
        if needle is None and hub and not cfg[group].path.startswith("packaged:"):  # packaged ones are installed
            needle = f"{group}.path {cfg[group].path} is not in the local HF cache"  # offline, nothing cached
        if needle is None:
            validate(cfg)
        else:
            with pytest.raises(CapdistillError, match=needle):
                validate(cfg)


def test_a_regime_sets_the_replay_slice_whatever_the_budget(make_cfg) -> None:
    """regime=strong_interference (the default) distils with no replay slice; mild_interference with 10%, over any
    budget option, and an explicit budget.replay still wins."""
    assert make_cfg().budget.replay == 0.0
    assert make_cfg("regime=mild_interference", "budget=b200k").budget.replay == 0.1
    assert make_cfg("regime=mild_interference", "budget.replay=0.2").budget.replay == 0.2
    assert make_cfg("experiment=transfer_mild_interference").budget.replay == 0.1


def test_micro_experiment_shrinks_the_world(make_cfg) -> None:
    cfg = make_cfg("experiment=micro")
    validate(cfg)
    assert cfg.capabilities.probe_size < make_cfg().capabilities.probe_size
    assert cfg.teacher.arch.hidden_size < make_cfg().teacher.arch.hidden_size


def test_unknown_key_names_the_key(make_cfg) -> None:
    with pytest.raises((ConfigCompositionException, ConfigKeyError)) as err:
        make_cfg("teacher.arch.hiden_size=64")
    assert "hiden_size" in str(err.value) + str(err.value.__cause__)


def test_bad_enum_lists_the_allowed_values(make_cfg) -> None:
    with pytest.raises((ConfigCompositionException, ValidationError)) as err:
        make_cfg("teacher.tokenizer=sentencepiece")
    message = str(err.value) + str(err.value.__cause__)
    assert "sentencepiece" in message and "word" in message and "bpe" in message


def test_wrong_type_names_the_key(make_cfg) -> None:
    with pytest.raises((ConfigCompositionException, ValidationError)) as err:
        make_cfg("capabilities.probe_size=many")
    assert "probe_size" in str(err.value) + str(err.value.__cause__)


def test_unknown_group_option_fails(make_cfg) -> None:
    with pytest.raises(ConfigCompositionException, match="teacher"):
        make_cfg("teacher=does-not-exist")


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["capabilities.names=[math,telepathy]"], "telepathy"),
        (["capabilities.names=[]"], "capabilities.names"),
        (["capabilities.names=[math,math]"], "twice"),
        (["capabilities.probe_size=0"], "capabilities.probe_size"),
        (["capabilities.params.math_steps=[]"], "math_steps"),
        (["capabilities.params.list_lengths=[[3,2]]"], "list_lengths"),
        (["+task.requirements.telepathy=1.0"], "telepathy"),
        (["task=synthetic/math", "task.requirements.math=0.0"], "positive"),
        (["task=synthetic/tool_math", "task.requirements.math=-1.0"], "non-negative"),
        (["task.source=nonexistent"], "task.source"),
        (["budget.total_tokens=0"], "budget.total_tokens"),
        (["budget.total_tokens=lots"], "budget.total_tokens"),
        (["budget.rounds=0"], "budget.rounds"),
        (["loss=jsd", "loss.beta=1.5"], "beta"),
        (["loss=topk", "loss.k=0"], "k"),
        (["loss=fkl", "loss.temperature=0"], "temperature"),
        (["loss=sft", "+loss.beta=0.5"], "beta"),
        (["teacher.arch.num_heads=3"], "divisible"),
        (["teacher.train.target=150"], "teacher.train.target"),
        (["+student.train.mix.telepathy=1.0"], "telepathy"),
        (["+teacher.train.curriculum_mix.telepathy=1.0"], "curriculum_mix"),
        (
            ["teacher.train.curriculum_mix.long_context=0", "teacher.train.curriculum_mix.context_code=0"],
            "curriculum_steps",
        ),
        (["allocator=read", "allocator.identify=guess"], "identify"),
        (["allocator=read", "allocator.context=full"], "allocator.context"),
        (["allocator=read", "allocator.calibration=isotonic"], "allocator.calibration"),
        (["allocator=read_trust", "allocator.trust_radius=1.5"], "trust_radius"),
        (["capabilities.dev_size=0"], "capabilities.dev_size"),
        (["evaluation.checkpoints=[0.5,1.5]"], "evaluation.checkpoints"),
        (["distill.lr=0"], "distill.lr"),
        (["distill.min_lr_ratio=2"], "distill.min_lr_ratio"),
        (["trainer.precision=foo"], "trainer: Precision 'foo' is invalid"),
        (["trainer.devices=0"], "trainer:"),
        (["report.figure=budget_curve"], "report.figure must be one of"),
        (["allocator=read", "+allocator.seed=3"], "allocator.seed is set by the run"),
        (["allocator._target_=builtins.int"], "allocator:"),
    ],
)
def test_validate_rejects_bad_values_in_one_line(make_cfg, overrides: list[str], needle: str) -> None:
    cfg = make_cfg(*overrides)
    with pytest.raises(CapdistillError) as err:
        validate(cfg)
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


def test_unwritable_cache_dir_is_rejected(make_cfg, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    cfg = make_cfg(cache_dir=blocker / "cache")
    with pytest.raises(ConfigError, match="paths.cache_dir"):
        validate(cfg)


def test_config_resolves_fully(make_cfg) -> None:
    cfg = make_cfg()
    container = OmegaConf.to_container(cfg, resolve=True)
    assert Path(container["paths"]["root_dir"], "conf", "train.yaml").is_file()


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("capabilities.params.tools_listed=[1,7]", "tools_listed"),
        ("capabilities.params.tools_listed=[0]", "tools_listed"),
        ("capabilities.params.context_pairs=[30]", "context_pairs"),
        ("capabilities.params.order_items=[1,3]", "order_items"),
        ("capabilities.params.order_items=[15]", "order_items"),
        ("capabilities.params.num_entities=1", "num_entities"),
    ],
)
def test_world_sizes_the_generators_cannot_honour_are_rejected(make_cfg, override: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        validate(make_cfg(override))


SYNTHETIC = "capdistill.config.model_specs.SyntheticModel"


def test_a_model_is_its_target_class_or_the_class_an_older_kind_key_names() -> None:
    legacy = OmegaConf.create({"kind": "hf", "name": "mine", "path": "gpt2", "init": {"layers": [0, 1]}})
    spec = model_spec(legacy, "student")
    assert isinstance(spec, HFModel) and spec.init.layers == [0, 1] and spec.dtype == Dtype.float32
    plain = OmegaConf.create({"_target_": SYNTHETIC, "name": "mine", "arch": {"hidden_size": 32, "num_heads": 2}})
    spec = model_spec(plain, "teacher")  # a YAML that does not extend the schema is checked against it all the same
    assert isinstance(spec, SyntheticModel) and spec.arch == ArchConf(hidden_size=32, num_heads=2)
    assert spec.train == WorldTrainConf() and spec.KIND == "synthetic"
    implied = model_spec(OmegaConf.create({"name": "mine"}), "teacher")  # no kind: synthetic, as it was
    assert isinstance(implied, SyntheticModel)


@pytest.mark.parametrize(
    ("node", "needle"),
    [
        ({"kind": "onnx", "name": "mine"}, "teacher.kind must be one of synthetic, hf"),
        ({"_target_": SYNTHETIC, "kind": "hf", "name": "mine"}, "teacher.kind: hf contradicts the class"),
        ({"_target_": "builtins.dict", "name": "mine"}, "not a SyntheticModel or HFModel"),
        ({"_target_": "capdistill.nowhere.Model", "name": "mine"}, "cannot import"),
        ({"_target_": SYNTHETIC, "name": "mine", "init": {"scratch": True}}, "teacher.init"),
        ({"_target_": SYNTHETIC, "name": "mine", "vocab_size": "many"}, "teacher.vocab_size"),
        ({"_target_": SYNTHETIC, "name": "mine", "vocab_size": 0}, "teacher.vocab_size must be positive"),
        ({"_target_": SYNTHETIC, "name": "mine", "arch": {"num_heads": 3}}, "teacher.arch.hidden_size .* divisible"),
    ],
)
def test_a_bad_model_config_fails_in_one_line_naming_the_key(node: dict, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle) as err:
        model_spec(OmegaConf.create(node), "teacher")
    assert "\n" not in str(err.value)


def test_every_figure_an_experiment_may_declare_is_drawn_with_its_baseline_in_the_help() -> None:
    """`results.figures.FIGURES` is the one list: `plot` draws each, `--baseline`'s help names each comparison."""
    from capdistill.results.figures import BASELINES, FIGURES, baseline_help
    from capdistill.results.plot import DRAW

    assert DRAW.keys() == FIGURES.keys()
    assert BASELINES == {"budget_curves": "task_static", "schedules": "task_static", "ablation": "read"}
    assert "(budget_curves, schedules, ablation; default: task_static for budget_curves and schedules, read for" in (
        baseline_help()
    )
