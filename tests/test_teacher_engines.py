"""Teacher engines: refusals before compute, and vLLM's CPU build serving SmolLM2-135M-Instruct for real.

The tests marked `served` share one server (the `served` fixture, started by capdistill's own launcher) and
run in one pytest process of their own (`make test` runs it beside the xdist workers); the distillation that
launches the same command shares it, and the last test kills it mid-round and lets the rerun start a fresh
one. The vLLM environment is `make vllm-env`'s (`CAPDISTILL_VLLM_PYTHON`, which `make test` sets).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from capdistill.components import validate
from capdistill.config.checks import ConfigError
from capdistill.config.hydra_setup import CONF_DIR
from capdistill.config.schema import Generation
from capdistill.distill import run as run_module
from capdistill.distill.run import distill
from capdistill.errors import CapdistillError
from capdistill.losses.sparse import CacheSpec
from capdistill.models import packaged
from capdistill.prompting import use_chat_template
from capdistill.results.record import check_record
from capdistill.supervision import openai_server
from capdistill.supervision.budget import round_slice
from capdistill.supervision.engines import Answer, HFEngine, RowEngine, top_rows
from capdistill.supervision.openai_server import ServerEngine, free_port, launch, launch_command
from capdistill.supervision.teacher_cache import CachedTeacher, compact_rows
from conftest import compose_config

VLLM_PYTHON = os.environ.get("CAPDISTILL_VLLM_PYTHON")
SERVED = "smollm2-135m-instruct"
# `+preset=vllm_cpu_server`'s launch command (its interpreter: CAPDISTILL_VLLM_PYTHON), which these tests start
PRESET = "+preset=vllm_cpu_server"
LAUNCH = OmegaConf.load(CONF_DIR / "preset" / "vllm_cpu_server.yaml").teacher.server.launch
REAL = [
    "capabilities=offline_real",
    "teacher=smollm2-135m-instruct",
    "student=smollm2-pruned-narrow",
    "capabilities.names=[math,reasoning]",
    "task=real/math",
    "evaluation.lmeval=false",
]
TINY = [
    "capabilities.probe_size=2",
    "capabilities.eval_size=2",
    "capabilities.dev_size=4",
    "capabilities.train_size=64",
    "capabilities.max_gen_toks=8",  # probes and eval answers cut short: the fault tests need no scores
    "budget.total_tokens=240",
    "budget.rounds=2",
    "distill.batch_size=4",
    "distill.generation.max_new_tokens=24",
    "allocator=uniform",
    "evaluation.checkpoints=[1.0]",  # the eval sets scored once, after the last round
]


# ------------------------------------------------------------------ without a server


def test_top_rows_keep_the_k_best_of_an_engines_k_plus_one() -> None:
    ids, values = top_rows([{5: -0.1, 9: -3.0, 2: -1.0}, {7: -0.5}], k=2)
    assert ids.tolist() == [[5, 2], [7, 0]]  # best first; the written token ranked third is dropped
    assert values[0].tolist() == pytest.approx([-0.1, -1.0]) and values[1, 1] == float("-inf")


class Recorder(RowEngine):
    """A row engine that records the requests it is given (what goes over the wire) and writes only EOS."""

    label = "recorder"

    def answer(self, requests, what):
        self.requests = list(requests)
        return [Answer([self.tokenizer.eos_token_id], "stop") for _ in requests]


def test_every_engine_samples_as_in_process_generate_does(tmp_path: Path) -> None:
    """The teacher's generation config reaches every request as `hf` generate reads it: top-k and min-p when
    sampling, the repetition penalty always."""
    tokenizer = AutoTokenizer.from_pretrained(packaged.materialize("gpt2-tokenizer", tmp_path))
    engine = Recorder(tokenizer, len(tokenizer), GenerationConfig(repetition_penalty=1.1, min_p=0.05, top_k=40))
    engine.write(["a", "b"], Generation(temperature=0.7, top_p=0.9), "call", None)
    sampled = engine.requests
    assert [(r.top_k, r.min_p, r.repetition_penalty, r.top_p) for r in sampled] == [(40, 0.05, 1.1, 0.9)] * 2
    assert sampled[0].seed != sampled[1].seed  # one seed per request, derived from the call
    engine.write(["a"], Generation(), "call", None)
    assert (engine.requests[0].top_k, engine.requests[0].min_p, engine.requests[0].repetition_penalty) == (0, 0, 1.1)


def test_rows_past_the_shared_vocabulary_become_padding() -> None:
    ids, values = torch.tensor([[3, 40]]), torch.tensor([[-0.2, -1.5]])
    packed, stored = compact_rows(CacheSpec("topk", 2, vocab=32), ids, values, vocab=48)
    rows = CachedTeacher(packed, stored)
    assert rows.token_ids().tolist() == [[3, 0]] and rows.log_probs()[0, 1] == float("-inf")


def test_a_launch_template_must_place_the_server_on_its_port() -> None:
    with pytest.raises(CapdistillError, match=r"must put the server on \{port\}"):
        launch_command("vllm serve {model}", model="m", port=1, name="n")
    with pytest.raises(CapdistillError, match="KeyError 'gpus'"):
        launch_command("serve {model} --port {port} --tp {gpus}", model="m", port=1, name="n")
    assert launch_command("serve {model} --port {port}", model="/a b", port=8, name="n") == [
        "serve",
        "/a",
        "b",
        "--port",
        "8",
    ]


HEALTH_SERVER = """
import http.server, pathlib, sys
sick = pathlib.Path(sys.argv[1]) / f"sick-{sys.argv[2]}"

class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(503 if sick.exists() else 200)
        self.end_headers()

http.server.HTTPServer(("127.0.0.1", int(sys.argv[2])), Health).serve_forever()
"""


def test_a_launched_server_is_reused_while_healthy_and_replaced_once_it_is_not(tmp_path: Path) -> None:
    """A sweep's jobs share the server a launch command started; one whose engine died answers /health with an
    error while its process winds down, and the next job starts a fresh server instead of failing on it."""
    script = tmp_path / "health.py"
    script.write_text(HEALTH_SERVER)
    template = f"{sys.executable} {script} {{model}} {{port}}"

    def start() -> openai_server.LaunchedServer:
        return launch(template, model=str(tmp_path), name="n", log_path=tmp_path / "log", startup_timeout_s=60)

    first = start()
    try:
        assert start() is first
        (tmp_path / f"sick-{first.port}").touch()  # its engine died; its process still runs
        assert not first.healthy() and first.exit_code() is None
        second = start()
        assert second is not first and second.healthy() and first.exit_code() is not None
        second.stop()
    finally:
        first.stop()


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["teacher.engine=server"], "teacher.engine=server needs server.url"),
        (
            ["teacher.engine=server", "teacher.server.url=http://h:1", "teacher.server.launch='x {port}'"],
            "exclude each other",
        ),
        (["teacher.engine=server", "teacher.server.url=h:8000"], "must start with http"),
        (["teacher.engine=server", "teacher.server.url=http://h:1", "teacher.server.restarts=-1"], "restarts must be"),
        (["teacher.engine=server", "teacher.server.launch='env A=1 /no/python -m vllm --port {port}'"], "'/no/python'"),
        (["teacher.engine=server", "teacher.server.url=http://h:1", "loss=fkl"], "loss=fkl reads the teacher's full"),
        (["teacher.engine=vllm", "loss=jsd"], "loss=jsd reads the teacher's full logits"),
        (["teacher.engine=server", "teacher.server.url=http://h:1", "loss=sampled"], "cannot give exactly"),
        (
            ["teacher.engine=server", "teacher.server.url=http://h:1", "loss=topk", "loss.teacher_source=live"],
            "use loss.teacher_source=cache",
        ),
        (
            ["teacher.engine=server", "teacher.server.url=http://h:1", "loss=topk", "student.chat_template=false"],
            "must agree for loss=topk",
        ),
        (["student.engine=server", "student.server.url=http://h:1"], "only the teacher writes through an engine"),
        (["teacher.engine=vllm", "teacher.vllm.gpu_memory_utilization=1.5"], "gpu_memory_utilization must be in"),
        (["teacher.engine=vllm", "teacher.init.layers=[0,1]"], "serves the teacher's checkpoint as saved"),
        (["teacher.engine=vllm", "teacher.vllm.max_logprobs=20", "loss=topk"], "max_logprobs=20 is below the 64"),
    ],
)
def test_what_an_engine_cannot_serve_fails_before_compute(tmp_path: Path, overrides: list[str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        validate(compose_config([*REAL, *overrides], tmp_path / "run", tmp_path / "cache"))


@pytest.mark.served  # it needs SmolLM2's directory, as the server tests do: one process converts it
def test_a_server_that_is_not_there_fails_in_one_line_before_any_model_loads(
    tmp_path: Path, real_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded before the server was checked")

    monkeypatch.setattr("capdistill.distill.roles.load_model", no_model)
    url = f"http://127.0.0.1:{free_port()}"
    cfg = compose_config(
        [*REAL, *TINY, "loss=topk", "teacher.engine=server", f"teacher.server.url={url}"], tmp_path / "run", real_cache
    )
    validate(cfg)
    with pytest.raises(
        CapdistillError, match=f"no OpenAI-compatible server answers at teacher.server.url={url}"
    ) as err:
        distill(cfg)
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------ vLLM's CPU server, for real


@pytest.fixture(scope="session")
def served(real_cache: Path, tmp_path_factory: pytest.TempPathFactory):
    """vLLM's OpenAI-compatible server on SmolLM2 (fp32), started once per session by capdistill's launcher."""
    if not VLLM_PYTHON:
        pytest.skip("CAPDISTILL_VLLM_PYTHON is not set: `make test` sets it (the vLLM environment: make vllm-env)")
    model = real_cache / "packaged" / SERVED
    log = tmp_path_factory.mktemp("server") / "server.log"
    # `make test` runs these tests at a lower priority beside the others: their start may wait for a core
    server = launch(LAUNCH, model=str(model), name=SERVED, log_path=log, startup_timeout_s=1200)
    yield server, model
    server.stop()


def smollm2(model: Path):
    tokenizer = AutoTokenizer.from_pretrained(model)
    use_chat_template(tokenizer)
    return AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).eval(), tokenizer


def train_prompts(n: int) -> list[str]:
    from capdistill.capabilities.sources import WorldSources
    from capdistill.supervision.slices import PromptStream

    world = WorldSources.from_spec(
        {"world": "offline_real", "names": ["math", "reasoning"], "train_size": 64, "probe_size": 4, "eval_size": 4}
    )
    return [
        p
        for c in ("math", "reasoning")
        for p in PromptStream(world.capabilities[c], "0", world.difficulties).take(0, n // 2)
    ]


@pytest.mark.slow
@pytest.mark.served
def test_the_server_writes_and_keeps_what_hf_generate_does(served) -> None:
    """The same prompts, greedy, through both engines: token-for-token agreement and the top-k rows' log-probs;
    and the rows a scoring request gives (prompt log-probs) are the ones generation gave."""
    server, model = served
    hf_model, tokenizer = smollm2(model)
    spec = CacheSpec("topk", 20)
    engine = ServerEngine(server.url, SERVED, tokenizer, len(tokenizer), concurrency=16)
    engine.connect(spec)
    prompts, generation = train_prompts(6), Generation(max_new_tokens=24, batch_size=6)
    ours = engine.write(prompts, generation, "agreement", spec)
    theirs = HFEngine(hf_model, tokenizer).write(prompts, generation, "agreement", spec)
    same = sum(a.ids == b.ids for a, b in zip(ours, theirs))
    largest = 0.0
    for a, b in zip(ours, theirs):
        shared = next((i for i, (x, y) in enumerate(zip(a.ids, b.ids)) if x != y), min(len(a.ids), len(b.ids)))
        rows_a, rows_b = CachedTeacher(*a.kept), CachedTeacher(*b.kept)
        top_a, top_b = rows_a.token_ids()[:shared, 0], rows_b.token_ids()[:shared, 0]
        assert torch.equal(top_a, top_b)  # while the texts agree, so does the teacher's best next token
        diff = (rows_a.log_probs()[:shared, 0] - rows_b.log_probs()[:shared, 0]).abs()
        largest = max(largest, float(diff.max()) if shared else 0.0)
    print(
        f"\nserver (vLLM CPU, fp32) vs hf (fp32): {same}/{len(prompts)} completions identical; "
        f"largest top-1 log-prob difference {largest:.2e}"
    )
    assert same >= len(prompts) * 3 // 4 and largest < 1e-2
    # scoring: prompt log-probs over the written ids give the rows generation gave
    done = list(zip(prompts, ours))[:3]
    scored = engine.score([(p, g.ids) for p, g in done], spec)
    for (_, written), rows in zip(done, scored):
        again, kept = CachedTeacher(*rows), CachedTeacher(*written.kept)
        assert torch.equal(again.token_ids()[:, 0], kept.token_ids()[:, 0])
        torch.testing.assert_close(again.log_probs()[:, :5], kept.log_probs()[:, :5], atol=1e-2, rtol=0)


@pytest.mark.slow
@pytest.mark.served
def test_a_server_of_another_model_or_vocabulary_is_refused(served, tmp_path: Path) -> None:
    server, model = served
    _, tokenizer = smollm2(model)
    with pytest.raises(CapdistillError, match=r"serves \['smollm2-135m-instruct'\], not the teacher 'qwen'"):
        ServerEngine(server.url, "qwen", tokenizer, len(tokenizer)).connect()
    gpt2 = AutoTokenizer.from_pretrained(packaged.materialize("gpt2-tokenizer", tmp_path))
    with pytest.raises(CapdistillError, match="tokenizes otherwise than the teacher's tokenizer"):
        ServerEngine(server.url, SERVED, gpt2, len(gpt2)).connect()
    with pytest.raises(CapdistillError, match="need a server started with --max-logprobs 100 or more"):
        ServerEngine(server.url, SERVED, tokenizer, len(tokenizer)).connect(CacheSpec("topk", 100))


def accounting_holds(record: dict) -> None:
    """The budget's invariants, whichever engine wrote: the record's own (spend within the budget, summing
    over rounds and capabilities), and each round's: its slice is what the budget had left for it, no
    capability spends past its share, and its shortfall is its slice less its spend."""
    check_record(record)
    total, rounds, spent_before = record["budget"]["total_tokens"], len(record["rounds"]), 0
    for index, entry in enumerate(record["rounds"]):
        shares, spent = entry["allotted_by_capability"], entry["spent_by_capability"]
        assert entry["allotted_tokens"] == round_slice(total, spent_before, rounds - index)
        assert sum(shares.values()) == entry["allotted_tokens"]
        assert all(spent[c] <= shares.get(c, 0) for c in spent)
        assert entry["shortfall_tokens"] == entry["allotted_tokens"] - sum(spent.values())
        assert entry["teacher_generated_tokens"] > 0
        spent_before += sum(spent.values())


def test_accounting_holds_for_the_hf_engine(run_micro) -> None:
    record, _ = run_micro("budget.rounds=2")
    accounting_holds(record)


VLLM_IN_PROCESS = """
import json, sys, torch
from transformers import AutoTokenizer
from capdistill.config.schema import Generation
from capdistill.losses.sparse import CacheSpec
from capdistill.prompting import use_chat_template
from capdistill.supervision.teacher_cache import CachedTeacher
from capdistill.supervision.vllm_offline import VllmEngine

model, prompts, out = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
tokenizer = AutoTokenizer.from_pretrained(model)
use_chat_template(tokenizer)
engine = VllmEngine(
    model, tokenizer, len(tokenizer), dtype="float32", max_logprobs=20, enforce_eager=True,
    distributed_executor_backend="uni",
)
written = engine.write(prompts, Generation(max_new_tokens=12), "in-process", CacheSpec("topk", 20))
with open(out, "w") as f:
    json.dump([[g.ids, CachedTeacher(*g.kept).log_probs()[:, 0].tolist()] for g in written], f)
"""


@pytest.mark.slow
@pytest.mark.served
def test_vllm_in_process_writes_what_its_server_writes(served, tmp_path: Path) -> None:
    """`teacher.engine=vllm`: vLLM's offline engine in the process (capdistill installed beside vLLM's CPU
    build), on the prompts the server answers, gives the same completions and top-1 log-probs."""
    server, model = served
    prompts = train_prompts(2)
    # the engine and its worker in this one process: two vLLM imports fewer to start
    env = os.environ | {
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "VLLM_CPU_OMP_THREADS_BIND": "nobind",
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    }
    done = subprocess.run(
        [VLLM_PYTHON, "-c", VLLM_IN_PROCESS, str(model), json.dumps(prompts), str(tmp_path / "written.json")],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    in_process = json.loads((tmp_path / "written.json").read_text())
    _, tokenizer = smollm2(model)
    spec = CacheSpec("topk", 20)
    engine = ServerEngine(server.url, SERVED, tokenizer, len(tokenizer))
    served_rows = engine.write(prompts, Generation(max_new_tokens=12), "in-process", spec)
    for (ids, top), written in zip(in_process, served_rows):
        assert ids == written.ids
        assert top == pytest.approx(CachedTeacher(*written.kept).log_probs()[:, 0].tolist(), abs=1e-3)


@pytest.mark.slow
@pytest.mark.served
def test_a_served_distillation_survives_its_server_dying_mid_round(
    served, tmp_path: Path, real_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`capdistill distill ... +preset=vllm_cpu_server` (teacher.engine=server) on the real tier, end to end (the
    last server test: it kills the session's server, which the same launch command reuses). With no restart
    allowed, the server dies while the teacher writes round 2: round 1 is saved and the run stops in one line.
    The same command (restarts at their default) starts a new server, and when that one dies in round 2 too,
    starts another, sends round 2's requests again and completes. The cache is filled from the server and no
    teacher is loaded."""
    overrides = [*REAL, *TINY, "loss=topk", PRESET]  # the same launch command as the session's server
    cfg = compose_config([*overrides, "teacher.server.restarts=0"], tmp_path / "run", real_cache)
    validate(cfg)
    real_generate, real_load = run_module.generate_round, run_module.load_role
    killed: list[int] = []

    def killed_in_round_2(settings, shares, streams, cursors, *args):
        if any(cursors.values()):  # round 2: round 1 has consumed prompts
            for server in list(openai_server.LAUNCHED.values()):
                killed.append(server.process.pid)
                os.killpg(server.process.pid, signal.SIGKILL)
                server.process.wait()
        return real_generate(settings, shares, streams, cursors, *args)

    monkeypatch.setattr(run_module, "generate_round", killed_in_round_2)
    with pytest.raises(CapdistillError) as err:
        distill(cfg)
    message = str(err.value)
    assert "\n" not in message and "stopped answering while writing supervision" in message
    assert "run the same command again to resume" in message and "exited with code -9" in message
    rounds = tmp_path / "run" / "rounds"
    first = json.loads((rounds / "round-000" / "round.json").read_text())["entry"]
    assert not (rounds / "round-001").exists() and not (tmp_path / "run" / "record.json").exists()

    # the same command: a fresh server resumes round 2, dies in it, and is started again within the run
    loaded, written = [], []

    def once_more(*a):
        written.append(a[3])
        return killed_in_round_2(*a) if len(killed) < 2 else real_generate(*a)

    monkeypatch.setattr(run_module, "generate_round", once_more)
    monkeypatch.setattr(run_module, "load_role", lambda r, *a: loaded.append(real_load(r, *a)) or loaded[-1])
    record = distill(compose_config(overrides, tmp_path / "run", real_cache))
    assert len(killed) == 2 and len(set(killed)) == 2  # the resumed run's own server died too
    (server,) = openai_server.LAUNCHED.values()
    assert server.process.pid not in killed and server.healthy()  # and was replaced
    accounting_holds(record)
    assert record["rounds"][0] == first and len(record["rounds"]) == 2
    assert len(written) == 1 and any(written[0].values())  # only round 2 was written again, once
    teacher, student = loaded
    assert teacher.model is None and student.model is not None  # the teacher's weights stay in the server
    assert record["teacher_cache"]["tokens"] == record["budget"]["spent_tokens"] > 0  # every token has its rows
    assert record["teacher_cache"]["examples_without"] == 0
    assert record["teacher_cache"]["bytes_per_token"] == 64 * (3 + 2)  # k = 64: 3-byte ids (49,152), fp16
