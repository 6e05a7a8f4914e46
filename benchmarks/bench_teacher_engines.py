"""Teacher engines side by side in one run: in-process `transformers` generate (`hf`) against a vLLM server
(`server`), on the same real-tier prompts, greedy, with the same generation settings.

SmolLM2-135M-Instruct (fp32) writes N completions through each engine (`engine.write`, after a warm-up call
on two prompts; hf first, before a launched server starts, whose idle CPU threads would compete with it).
Reported: the tokens each writes per second (every written id of every completion), the ratio server / hf,
how many completions agree token for token and the mean fraction of identical leading tokens, and with a
top-k cache (`--k` > 0) the largest |difference| of the two engines' top-1 log-probs over the positions
where both prefixes are still identical, and each cache's bytes per token.

The server is launched from `--server-python` (a venv with vLLM; default `$CAPDISTILL_VLLM_PYTHON`, the
Makefile's .venv-vllm) serving the same directory, and stopped at the end; `--url` uses a running one.

    .venv/bin/python benchmarks/bench_teacher_engines.py --server-python .venv-vllm/bin/python
    .venv/bin/python benchmarks/bench_teacher_engines.py --prompts 4 --max-new-tokens 8 --json /tmp/engines.json
    .venv/bin/python benchmarks/bench_teacher_engines.py --url http://127.0.0.1:8000 --k 0
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import requests  # noqa: E402
import torch  # noqa: E402
from round_bench import write_json  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from capdistill.capabilities.sources import WorldSources  # noqa: E402
from capdistill.config.schema import Generation  # noqa: E402
from capdistill.losses.sparse import CacheSpec  # noqa: E402
from capdistill.models.packaged import materialize  # noqa: E402
from capdistill.prompting import Generated, use_chat_template  # noqa: E402
from capdistill.supervision.engines import HFEngine, TeacherEngine  # noqa: E402
from capdistill.supervision.openai_server import ServerEngine, launch  # noqa: E402
from capdistill.supervision.slices import PromptStream  # noqa: E402
from capdistill.supervision.teacher_cache import CachedTeacher  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PACKAGED = "smollm2-135m-instruct"
CAPABILITIES = ["math", "reasoning"]
# the CPU build's settings are ignored by a GPU build
LAUNCH = (
    "env VLLM_CPU_KVCACHE_SPACE=1 VLLM_CPU_OMP_THREADS_BIND=nobind {python} -m vllm.entrypoints.openai.api_server "
    "--model {{model}} --served-model-name {{name}} --port {{port}} --host 127.0.0.1 --enforce-eager "
    "--generation-config vllm --max-logprobs {max_logprobs} --dtype {dtype}"
)


def real_prompts(n: int) -> list[str]:
    """`n` train prompts of the real tier, its capabilities in turn (each from its own stream)."""
    share = math.ceil(n / len(CAPABILITIES))
    spec = {"world": "offline_real", "names": CAPABILITIES, "train_size": max(64, share)}
    world = WorldSources.from_spec(spec | {"probe_size": 8, "eval_size": 8, "dev_size": 8})
    streams = [PromptStream(world.capabilities[c], "0", world.difficulties).take(0, share) for c in CAPABILITIES]
    return [p for group in zip(*streams) for p in group][:n]


def timed_write(
    engine: TeacherEngine, prompts: list[str], generation: Generation, cache: CacheSpec | None
) -> tuple[list[Generated], float]:
    """`engine.write` after a warm-up call on two prompts, and its seconds."""
    engine.write(prompts[:2], generation, "warm-up", cache)
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    written = engine.write(prompts, generation, "bench", cache)
    if cuda:
        torch.cuda.synchronize()
    return written, time.perf_counter() - start


def leading(a: list[int], b: list[int]) -> int:
    """How many leading tokens `a` and `b` share."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def compare(hf: list[Generated], server: list[Generated], k: int) -> dict:
    """Token agreement of the two engines' completions and, with a cache, their top-1 log-probs where both
    wrote the same prefix (row j is the distribution after the prompt and the first j written tokens)."""
    same = sum(a.ids == b.ids for a, b in zip(hf, server))
    fractions = [leading(a.ids, b.ids) / max(len(a.ids), len(b.ids), 1) for a, b in zip(hf, server)]
    figures = {"agree": same, "mean_leading_fraction": sum(fractions) / len(fractions)}
    if k == 0:
        return figures
    diffs, top_ids_same = [], 0
    for a, b in zip(hf, server):
        ca, cb = CachedTeacher(*a.kept), CachedTeacher(*b.kept)
        n = min(leading(a.ids, b.ids) + 1, len(ca), len(cb))
        diffs.append((ca.log_probs()[:n, 0] - cb.log_probs()[:n, 0]).abs())
        top_ids_same += int((ca.token_ids()[:n, 0] == cb.token_ids()[:n, 0]).sum())
    every = torch.cat(diffs)
    return figures | {
        "positions_compared": every.numel(),
        "top1_logprob_max_abs_diff": float(every.max()) if every.numel() else None,
        "top1_logprob_mean_abs_diff": float(every.mean()) if every.numel() else None,
        "top1_id_agree_positions": top_ids_same,
    }


def cache_bytes_per_token(written: list[Generated]) -> float | None:
    caches = [CachedTeacher(*g.kept) for g in written if g.kept is not None]
    rows = sum(len(c) for c in caches)
    return sum(c.nbytes for c in caches) / rows if rows else None


def served_name(url: str) -> str:
    """The first model a running server lists."""
    listed = requests.get(f"{url.rstrip('/')}/v1/models", timeout=30)
    listed.raise_for_status()
    return listed.json()["data"][0]["id"]


def server_version(url: str) -> str | None:
    try:
        return requests.get(f"{url.rstrip('/')}/version", timeout=10).json().get("version")
    except (requests.RequestException, ValueError, AttributeError):
        return None


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=64, help="the hf engine's generate batch")
    parser.add_argument("--k", type=int, default=20, help="top-k cache rows (0: no cache)")
    parser.add_argument("--server-python", default=os.environ.get("CAPDISTILL_VLLM_PYTHON"), help="vLLM's python")
    parser.add_argument("--dtype", default="float32", help="the server's --dtype")
    parser.add_argument("--url", default=None, help="use the server running here instead of launching one")
    parser.add_argument("--name", default=None, help="its served model name (default: the first it lists)")
    parser.add_argument("--launch", default=None, help="the server command ({model} {port} {name}); default: vLLM's")
    parser.add_argument("--concurrency", type=int, default=64, help="the server engine's requests in flight")
    parser.add_argument("--startup-timeout", type=float, default=900.0, help="seconds to wait for the server")
    parser.add_argument("--threads", type=int, default=None, help="torch threads of the hf engine (default: torch's)")
    parser.add_argument("--cache-dir", default=os.environ.get("CAPDISTILL_CACHE", str(ROOT / "outputs" / "cache")))
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args()
    if args.url is None and args.launch is None and not args.server_python:
        parser.error("give --server-python (or set CAPDISTILL_VLLM_PYTHON), --launch, or --url")

    if args.threads:
        torch.set_num_threads(args.threads)
    path = materialize(PACKAGED, args.cache_dir)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    use_chat_template(tokenizer)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval().to(device)
    vocab = model.get_output_embeddings().weight.shape[0]
    prompts = real_prompts(args.prompts)
    generation = Generation(temperature=0.0, top_p=1.0, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    cache = CacheSpec("topk", args.k) if args.k > 0 else None

    # hf first, before a launched server exists: an idle vLLM CPU server's threads would compete with it
    hf_written, hf_s = timed_write(HFEngine(model, tokenizer), prompts, generation, cache)
    process, log_path = None, None
    try:
        url, name = args.url, args.name
        if url is None:
            template = args.launch or LAUNCH.format(
                python=shlex.quote(args.server_python), max_logprobs=max(64, args.k), dtype=args.dtype
            )
            log_path = Path(tempfile.mkdtemp(prefix="bench_teacher_engines_")) / "server.log"
            name = name or PACKAGED
            started = time.perf_counter()
            process = launch(
                template, model=str(path), name=name, log_path=log_path, startup_timeout_s=args.startup_timeout
            )
            print(f"server ready at {process.url} after {time.perf_counter() - started:.0f} s (log: {log_path})")
            url = process.url
        name = name or served_name(url)
        server = ServerEngine(url, name, tokenizer, vocab, concurrency=args.concurrency, process=process)
        server.connect(cache)
        server_written, server_s = timed_write(server, prompts, generation, cache)
        version = server_version(url)
        server.close()
    finally:
        if process is not None:
            process.stop()

    engines = {}
    for label, written, seconds in (("hf", hf_written, hf_s), ("server", server_written, server_s)):
        tokens = sum(len(g.ids) for g in written)
        engines[label] = {"seconds": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds}
        if cache is not None:
            engines[label]["cache_bytes_per_token"] = cache_bytes_per_token(written)
    ratio = engines["server"]["tokens_per_s"] / engines["hf"]["tokens_per_s"]
    agreement = compare(hf_written, server_written, args.k)

    print(
        f"{PACKAGED} fp32 in-process on {device.type} against the server ({args.dtype if args.url is None else 'as served'}"
        f"{', vLLM ' + version if version else ''}): {len(prompts)} prompts x {args.max_new_tokens} new tokens, "
        f"greedy, k={args.k}"
    )
    print(f"{'engine':<8} {'seconds':>8} {'tokens':>7} {'tokens/s':>9} {'cache B/token':>14}")
    for label, e in engines.items():
        per_token = e.get("cache_bytes_per_token")
        print(
            f"{label:<8} {e['seconds']:>8.2f} {e['tokens']:>7} {e['tokens_per_s']:>9.1f} "
            f"{'-' if per_token is None else f'{per_token:.1f}':>14}"
        )
    print(f"server / hf: {ratio:.2f}x")
    print(
        f"agree token for token: {agreement['agree']}/{len(prompts)}, "
        f"mean identical leading fraction {agreement['mean_leading_fraction']:.3f}"
    )
    if cache is not None:
        worst = agreement["top1_logprob_max_abs_diff"]
        print(
            f"top-1 log-prob |hf - server| over {agreement['positions_compared']} positions with identical prefixes: "
            f"max {worst if worst is None else f'{worst:.2e}'}, "
            f"mean {agreement['top1_logprob_mean_abs_diff'] or 0:.2e}; top-1 id agrees at "
            f"{agreement['top1_id_agree_positions']}"
        )
    figures = {
        "model": PACKAGED,
        "device": device.type,
        "server_dtype": args.dtype if args.url is None else None,
        "vllm": version,
        "prompts": len(prompts),
        "max_new_tokens": args.max_new_tokens,
        "batch_size": args.batch_size,
        "hf_threads": torch.get_num_threads(),
        "k": args.k,
        "engines": engines,
        "server_over_hf": ratio,
        **agreement,
        "server_log": None if log_path is None else str(log_path),
    }
    return write_json(args.json, figures)


if __name__ == "__main__":
    main()
