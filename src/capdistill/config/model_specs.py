"""The teacher's and student's configs: a synthetic-world model or a Hugging Face model, chosen by `_target_`.

Each class is its own schema. A model option's YAML extends it (`defaults: [/schema/hf_model@_here_]`),
so composition type-checks every field, and every field can be overridden from the command line;
the `_target_` it carries names the class the run's typed settings hold it as (`components.typed_settings`,
handed to each role as a `ModelRequest` by `components.model_requests`).
Range checks live in `__post_init__`, next to the values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import ClassVar

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from capdistill.config.checks import ConfigError, locate, positive


class TokenizerKind(str, Enum):
    word = "word"
    bpe = "bpe"


class Engine(str, Enum):
    """How the teacher writes: in-process `transformers` generate, vLLM's offline `LLM` in the same process,
    or an OpenAI-compatible server (vLLM's, SGLang's) reached over HTTP."""

    hf = "hf"
    vllm = "vllm"
    server = "server"


class Dtype(str, Enum):
    auto = "auto"
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


@dataclass
class ArchConf:
    hidden_size: int = 128
    intermediate_size: int = 384
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int | None = None
    max_positions: int = 256
    tie_embeddings: bool = True

    def __post_init__(self) -> None:
        positive("arch.", hidden_size=self.hidden_size, num_layers=self.num_layers, num_heads=self.num_heads)
        positive("arch.", intermediate_size=self.intermediate_size)
        if self.hidden_size % self.num_heads:
            raise ConfigError(
                f"arch.hidden_size ({self.hidden_size}) must be divisible by num_heads ({self.num_heads})"
            )


@dataclass
class WorldTrainConf:
    """How a world model is trained from scratch (teacher) or briefly pre-trained (student base)."""

    max_steps: int = 1000
    batch_size: int = 64
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    # Stop once every capability and task reaches `target` % on the dev split (null: run max_steps).
    target: float | None = None
    eval_every: int = 200
    dev_size: int = 32
    max_minutes: float | None = None
    # Relative sampling weight per capability/task (missing ones weigh 1).
    mix: dict[str, float] = field(default_factory=dict)
    # A first stage of `curriculum_steps` steps drawn by `curriculum_mix` (missing ones weigh 0)
    # instead of `mix`: e.g. retrieval alone, so the lookup circuit forms before the mixture.
    curriculum_steps: int = 0
    curriculum_mix: dict[str, float] = field(default_factory=dict)
    curriculum_lr: float | None = None  # the stage's (constant, after warmup) learning rate; null: `lr`
    # Examples are length-sorted `bucket` batches at a time: less padding, but each batch
    # holds fewer task families (1: fully mixed batches, which learn fastest per second).
    bucket: int = 1

    def __post_init__(self) -> None:
        positive("train.", batch_size=self.batch_size, eval_every=self.eval_every, dev_size=self.dev_size)
        positive("train.", bucket=self.bucket, lr=self.lr)
        if self.max_steps < 0:
            raise ConfigError(f"train.max_steps must be >= 0, got {self.max_steps}")
        if not 0 <= self.grad_clip < math.inf:  # negative would silently not clip, NaN would poison every step
            raise ConfigError(f"train.grad_clip must be a finite number >= 0 (0: no clipping), got {self.grad_clip}")
        if self.curriculum_steps and not any(w > 0 for w in self.curriculum_mix.values()):
            raise ConfigError("train.curriculum_steps needs a curriculum_mix with a positive weight")
        if self.target is not None and not 0 < self.target <= 100:
            raise ConfigError(f"train.target must be in (0, 100], got {self.target}")


@dataclass
class InitConf:
    """How an HF student starts, other than as the checkpoint at `path`."""

    # keep these decoder layers of the checkpoint, in order (layer-dropping initialisation)
    layers: list[int] | None = None
    # width pruning: keep this many residual channels / MLP neurons per layer (largest weight norms)
    hidden_size: int | None = None
    intermediate_size: int | None = None
    # random weights shaped by `arch` (a Llama), with the tokenizer at `path`
    scratch: bool = False


@dataclass
class ServerConf:
    """The OpenAI-compatible server a teacher with `engine=server` writes through: a running one at `url`, or
    one capdistill starts from `launch` (a command line; `{model}`, `{port}` and `{name}` are filled with the
    teacher's local directory, a free port and the served name), waits for on `/health`, and stops."""

    url: str | None = None  # e.g. http://node017:8000 (no /v1)
    launch: str | None = None
    model: str | None = None  # the served model name; null: the teacher's `name`
    concurrency: int = 64  # requests in flight at once
    timeout_s: float = 600.0  # one request
    retries: int = 3  # per request, with exponential backoff, on a refused connection or a 5xx/429 answer
    startup_timeout_s: float = 900.0  # a launched server's wait for /health
    restarts: int = 2  # a launched server that stops answering mid-run is started again this often in a run

    def __post_init__(self) -> None:
        positive("server.", concurrency=self.concurrency, timeout_s=self.timeout_s)
        positive("server.", startup_timeout_s=self.startup_timeout_s)
        for key in ("retries", "restarts"):
            if getattr(self, key) < 0:
                raise ConfigError(f"server.{key} must be >= 0, got {getattr(self, key)}")
        if self.url is not None and not self.url.startswith(("http://", "https://")):
            raise ConfigError(f"server.url must start with http:// or https://, got {self.url!r}")


@dataclass
class VllmConf:
    """vLLM's offline engine in the run's process (`engine=vllm`, GPUs)."""

    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.85
    max_logprobs: int | None = None  # null: what the loss's cache needs (at least vLLM's default, 20)
    max_model_len: int | None = None  # null: the model's own

    def __post_init__(self) -> None:
        positive("vllm.", tensor_parallel_size=self.tensor_parallel_size)
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ConfigError(f"vllm.gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}")


@dataclass
class ModelBase:
    """What every teacher or student option has: the class it builds (`_target_`), a name, a seed, and the
    `kind` key that chose the class before `_target_` did (if set, it must agree)."""

    _target_: str = MISSING
    name: str = MISSING
    seed: int = 0
    kind: str | None = None
    KIND: ClassVar[str] = ""

    def __post_init__(self) -> None:
        if self.kind is not None and self.kind != self.KIND:
            raise ConfigError(f"kind: {self.kind} contradicts the class {type(self).__name__} (kind {self.KIND})")


@dataclass
class SyntheticModel(ModelBase):
    """A Llama that the synthetic world builds from `arch` with its own `tokenizer`, trained by `train`
    (built once and cached under a hash of what the build depends on)."""

    _target_: str = "capdistill.config.model_specs.SyntheticModel"
    tokenizer: TokenizerKind = TokenizerKind.word
    vocab_size: int = 1024
    arch: ArchConf = field(default_factory=ArchConf)
    train: WorldTrainConf = field(default_factory=WorldTrainConf)
    KIND: ClassVar[str] = "synthetic"

    def __post_init__(self) -> None:
        super().__post_init__()
        positive("", vocab_size=self.vocab_size)


@dataclass
class HFModel(ModelBase):
    """Any Hugging Face causal LM, by hub name (from the local HF cache), local directory or `packaged:` name,
    optionally pruned (`init.layers`, `init.hidden_size`, ...) or re-initialised at random (`init.scratch`,
    shaped by `arch`, seeded by `seed`)."""

    _target_: str = "capdistill.config.model_specs.HFModel"
    path: str | None = None
    dtype: Dtype = Dtype.float32
    attn_implementation: str | None = None  # e.g. sdpa, eager, flash_attention_2
    chat_template: bool = False  # wrap prompts in the tokenizer's chat template
    init: InitConf = field(default_factory=InitConf)
    arch: ArchConf = field(default_factory=ArchConf)
    # a teacher's way of writing (a student is always `hf`): `teacher.engine=server teacher.server.url=...`
    engine: Engine = Engine.hf
    server: ServerConf = field(default_factory=ServerConf)
    vllm: VllmConf = field(default_factory=VllmConf)
    KIND: ClassVar[str] = "hf"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.engine is Engine.server and not (self.server.url or self.server.launch):
            raise ConfigError(
                "engine=server needs server.url (a running OpenAI-compatible server) or server.launch "
                "(a command line that starts one)"
            )
        if self.engine is Engine.server and self.server.url and self.server.launch:
            raise ConfigError("server.url and server.launch exclude each other: reach a running server, or start one")


ModelSpec = SyntheticModel | HFModel
# the classes by the `kind` key that chose them before `_target_` did (a user's older YAML keeps working)
MODEL_KINDS: dict[str, type[SyntheticModel] | type[HFModel]] = {"synthetic": SyntheticModel, "hf": HFModel}


def model_spec(node: DictConfig, role: str) -> ModelSpec:
    """The role's model class, built from its config node and checked (type, unknown key, range), in one line.

    The class is the one `_target_` names (or, for a config written before `_target_`, the one `kind` names);
    merging the node into the class's schema checks it whether or not the YAML extended the schema.
    """
    if "_target_" in node:
        cls = locate(str(node._target_), role)
    elif node.get("kind", "synthetic") in MODEL_KINDS:  # before `_target_`: `kind`, synthetic by default
        cls = MODEL_KINDS[node.get("kind", "synthetic")]
    else:
        raise ConfigError(f"{role}.kind must be one of {', '.join(MODEL_KINDS)} (or set {role}._target_)")
    if not (isinstance(cls, type) and issubclass(cls, (SyntheticModel, HFModel))):
        raise ConfigError(f"{role}._target_ {node._target_} is not a SyntheticModel or HFModel (config.model_specs)")
    options = dict(node.items())
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cls), options))  # type: ignore[return-value]
    except OmegaConfBaseException as err:
        raise ConfigError(f"{role}.{err.full_key}: {err.msg}".splitlines()[0]) from None
    except ConfigError as err:  # a range check: name the field within the role
        raise ConfigError(f"{role}.{err}") from None
