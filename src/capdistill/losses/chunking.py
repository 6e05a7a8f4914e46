"""The chunked driver: per-row losses over selected rows, memory bounded by one chunk.

Every full-vocabulary loss is a function of a few *row-aligned* inputs (student logits,
teacher logits, target ids, sampled uniforms, ...) evaluated on a set of selected rows:
the counted ``(b, t)`` positions of a ``[B, T, ...]`` batch, or the paired positions of two
batches. Inputs are indexed in place, never flattened into a copy, so a non-contiguous
``logits[:, :-1]`` costs nothing. The driver gathers ``chunk_size`` selected rows at a
time, up-casts floating chunks to fp32 (fp64 stays fp64), evaluates the per-row function
and never keeps more than one chunk of full-vocabulary fp32 intermediates alive:

* ``chunked_sum`` returns ``scale * sum(fn(rows))``. When a gradient is needed, each
  chunk's gradient is computed *during the forward pass* (in closed form with
  ``analytic=True``, else by local autograd on the chunk) and written into one buffer per
  differentiable input (same dtype and shape as that input: the memory any backward pass
  needs anyway); backward only returns the buffer (scaled by the incoming gradient when
  that is not 1). No recomputation, and random draws made in the forward are the ones
  differentiated. The saved buffer is freed with the graph.
* ``chunked_map`` returns ``fn(rows)`` stacked (``[N, ...]``), for losses that need a
  small per-row summary before reducing (MultiLevelOT's top-k vectors). Nothing is saved
  but the inputs; backward recomputes each chunk (``fn`` must be deterministic).

Logits may also be given *unmaterialised*, as ``LinearLogits`` (a model's final hidden states
``[B, T, H]`` and its output embedding ``[V, H]``): each chunk's logits are computed as
``hidden @ weight.T`` when the chunk is loaded, and its closed-form logit gradient ``g`` goes to
the hidden states (``g @ weight``) and the weight (``g.T @ hidden``, accumulated in fp32). No
``[B, T, V]`` tensor, nor its gradient, ever exists (the fused-linear losses of Liger-Kernel).

Peak extra memory is therefore the gradient buffer plus one chunk's working set (a few
``chunk_size x V`` fp32 tensors; by default about 2**23 elements each). Columns can be
sliced per input (``Rows.cols``), which is how same-family vocabularies are truncated to
the shared size without copying the full logits; the sliced-off columns get a zero
gradient. Neither function supports double backward.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

# A chunk holds about this many elements per full-vocabulary tensor (32 MiB in fp32).
DEFAULT_CHUNK_ELEMENTS = 1 << 23


Index = Tensor | tuple[Tensor, ...]


@dataclass(frozen=True)
class LinearLogits:
    """Logits ``hidden @ weight.T`` that are never materialised: ``hidden [B, T, H]`` (a model's final
    hidden states) and ``weight [V, H]`` (its output embedding, bias-free). Same-vocabulary losses take
    them wherever they take ``[B, T, V]`` logits; the chunked driver computes one chunk at a time."""

    hidden: Tensor
    weight: Tensor

    def __post_init__(self) -> None:
        if self.hidden.dim() != 3 or self.weight.dim() != 2 or self.hidden.shape[-1] != self.weight.shape[-1]:
            raise ValueError(
                f"LinearLogits needs hidden [B, T, H] and weight [V, H], got {list(self.hidden.shape)} "
                f"and {list(self.weight.shape)}"
            )

    @property
    def shape(self) -> torch.Size:
        return torch.Size((*self.hidden.shape[:2], self.weight.shape[0]))

    @property
    def dtype(self) -> torch.dtype:
        return self.hidden.dtype

    @property
    def device(self) -> torch.device:
        return self.hidden.device

    @property
    def requires_grad(self) -> bool:
        return self.hidden.requires_grad or self.weight.requires_grad

    def dim(self) -> int:
        return 3

    def is_floating_point(self) -> bool:
        return self.hidden.is_floating_point()

    def detach(self) -> LinearLogits:
        return LinearLogits(self.hidden.detach(), self.weight.detach())

    def materialize(self) -> Tensor:
        """The ``[B, T, V]`` logits (for a loss that has no fused path)."""
        return self.hidden @ self.weight.T


@dataclass(frozen=True)
class Rows:
    """Selected rows of ``tensor``, optionally keeping the first ``cols`` entries of the last dim.

    ``index`` is either a tuple of index tensors into the leading dims (e.g. ``mask.nonzero(as_tuple=True)``
    for a ``[B, T, V]`` tensor, which needs no flattening copy even when the logits are a
    non-contiguous slice such as ``logits[:, :-1]``) or one index tensor into the first dim.
    """

    tensor: Tensor | LinearLogits
    index: Index
    cols: int | None = None

    @property
    def n(self) -> int:
        return (self.index[0] if isinstance(self.index, tuple) else self.index).numel()

    @property
    def width(self) -> int:
        lead = len(self.index) if isinstance(self.index, tuple) else 1
        if self.tensor.dim() <= lead:
            return 1
        return self.cols if self.cols is not None else self.tensor.shape[-1]


def resolve_chunk_size(chunk_size: int | None, width: int) -> int:
    """Rows per chunk: ``chunk_size``, or about ``DEFAULT_CHUNK_ELEMENTS / width`` when None."""
    if chunk_size is not None:
        return chunk_size
    return max(1, DEFAULT_CHUNK_ELEMENTS // max(1, width))


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """What a loss computes in: fp64 for fp64 inputs, else fp32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _slice(index: Index, start: int, end: int) -> Index:
    return tuple(i[start:end] for i in index) if isinstance(index, tuple) else index[start:end]


def _load(tensor: Tensor, index: Index, cols: int | None, needs_grad: bool) -> Tensor:
    x = tensor[index]
    if cols is not None and cols < x.shape[-1]:
        x = x[..., :cols]
    if x.is_floating_point():
        x = x.to(compute_dtype(x.dtype))
    if needs_grad:
        x = x.detach().requires_grad_(True)
    return x


def _accumulate(buffer: Tensor, index: Index, cols: int | None, grad: Tensor) -> None:
    target = buffer if cols is None or cols >= buffer.shape[-1] else buffer[..., :cols]
    target.index_put_(index if isinstance(index, tuple) else (index,), grad.to(buffer.dtype), accumulate=True)


def _chunks(n: int, size: int) -> list[tuple[int, int]]:
    return [(start, min(n, start + size)) for start in range(0, n, size)]


def _chunk_grads(
    fn: Callable[..., Tensor],
    tensors: Sequence[Tensor],
    spec: _Spec,
    needs: Sequence[bool],
    start: int,
    end: int,
    grad_out: Tensor | None,
) -> tuple[Tensor, list[Tensor | None]]:
    """Evaluate ``fn`` on one chunk with local autograd; return its output and input gradients."""
    leaves = [
        _load(t, _slice(idx, start, end), c, need) for t, idx, c, need in zip(tensors, spec.indices, spec.cols, needs)
    ]
    wanted = [leaf for leaf, need in zip(leaves, needs) if need]
    with torch.enable_grad():
        out = fn(*leaves)
        root = out.sum() if grad_out is None else out
    if root.requires_grad:
        grads = iter(torch.autograd.grad(root, wanted, grad_outputs=grad_out, allow_unused=True))
    else:  # the output does not depend on any differentiable input (e.g. sampled teacher)
        grads = iter([None] * len(wanted))
    result: list[Tensor | None] = []
    for leaf, need in zip(leaves, needs):
        g = next(grads) if need else None
        result.append(torch.zeros_like(leaf) if need and g is None else g)
    return out.detach(), result


@dataclass(frozen=True)
class _Spec:
    indices: tuple[Index, ...]
    cols: tuple[int | None, ...]
    chunk: int
    n: int
    analytic: bool = False
    linear: tuple[bool, ...] = ()  # per input: given as LinearLogits (two tensors: hidden, weight)


def _positions(spec: _Spec) -> list[int]:
    """Where each input starts among the flat tensors (a LinearLogits input takes two)."""
    starts, at = [], 0
    for linear in spec.linear or (False,) * len(spec.indices):
        starts.append(at)
        at += 2 if linear else 1
    return starts


def _load_linear(hidden: Tensor, weight: Tensor, index: Index, cols: int | None) -> tuple[Tensor, Tensor]:
    """One chunk's logits ``hidden[index] @ weight[:cols].T`` (up-cast as `_load` does) and its hidden rows."""
    h = hidden[index]
    w = weight if cols is None else weight[:cols]
    return (h @ w.T).to(compute_dtype(h.dtype)), h


class _ChunkedSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, fn, spec: _Spec, scale: Tensor, need_grad: bool, *tensors: Tensor) -> Tensor:  # type: ignore[override]
        needs = [need_grad and t.requires_grad for t in tensors]
        starts = _positions(spec)
        linear = spec.linear or (False,) * len(starts)
        weights = {start + 1 for start, lin in zip(starts, linear) if lin}  # fp32 accumulators for the weights
        buffers = [
            torch.zeros_like(t, dtype=compute_dtype(t.dtype) if i in weights else t.dtype) if need else None
            for i, (t, need) in enumerate(zip(tensors, needs))
        ]
        entry_needs = [any(needs[s : s + (2 if lin else 1)]) for s, lin in zip(starts, linear)]
        dtype = compute_dtype(tensors[0].dtype)
        scale = scale.to(dtype)
        total = torch.zeros((), dtype=dtype, device=scale.device)
        for start, end in _chunks(spec.n, spec.chunk):
            index = [_slice(idx, start, end) for idx in spec.indices]
            if spec.analytic:
                chunk, hidden = [], []
                for s_, lin, idx, c in zip(starts, linear, index, spec.cols):
                    x, h = (
                        _load_linear(tensors[s_], tensors[s_ + 1], idx, c)
                        if lin
                        else (_load(tensors[s_], idx, c, False), None)
                    )
                    chunk.append(x)
                    hidden.append(h)
                out, grads = fn(*chunk, needs=tuple(entry_needs))
                del chunk
                for s_, lin, idx, c, g, h in zip(starts, linear, index, spec.cols, grads, hidden):
                    if g is None:
                        continue
                    g = g.mul_(scale)
                    if not lin:
                        _accumulate(buffers[s_], idx, c, g)
                        continue
                    weight = tensors[s_ + 1] if c is None else tensors[s_ + 1][:c]
                    if buffers[s_] is not None:  # d hidden = g @ weight
                        _accumulate(buffers[s_], idx, None, g.to(weight.dtype) @ weight)
                    if buffers[s_ + 1] is not None:  # d weight = g.T @ hidden, over the chunk's rows
                        target = buffers[s_ + 1] if c is None else buffers[s_ + 1][:c]
                        target.add_((g.T.to(h.dtype) @ h).to(target.dtype))
            elif any(needs):
                out, grads = _chunk_grads(fn, tensors, spec, needs, start, end, None)
                for buf, g, idx, c in zip(buffers, grads, index, spec.cols):
                    if buf is not None and g is not None:
                        _accumulate(buf, idx, c, g * scale)
            else:
                out = fn(*[_load(t, idx, c, False) for t, idx, c in zip(tensors, index, spec.cols)])
            total = total + out.sum().to(dtype)
        ctx.buffers = [b if b is None or b.dtype == t.dtype else b.to(t.dtype) for b, t in zip(buffers, tensors)]
        return total * scale

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: Tensor):  # type: ignore[override]
        unit = bool(torch.all(grad_output == 1))
        grads = [None if buf is None else (buf if unit else buf * grad_output.to(buf.dtype)) for buf in ctx.buffers]
        return (None, None, None, None, *grads)


class _ChunkedMap(torch.autograd.Function):
    @staticmethod
    def forward(ctx, fn, spec: _Spec, *tensors: Tensor) -> Tensor:  # type: ignore[override]
        outs = []
        for start, end in _chunks(spec.n, spec.chunk) or [(0, 0)]:
            chunk = [_load(t, _slice(idx, start, end), c, False) for t, idx, c in zip(tensors, spec.indices, spec.cols)]
            outs.append(fn(*chunk))
        ctx.fn, ctx.spec = fn, spec
        ctx.save_for_backward(*tensors)
        return torch.cat(outs, 0)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: Tensor):  # type: ignore[override]
        tensors = ctx.saved_tensors
        needs = list(ctx.needs_input_grad[2:])
        buffers = [torch.zeros_like(t) if need else None for t, need in zip(tensors, needs)]
        spec: _Spec = ctx.spec
        if any(needs):
            for start, end in _chunks(spec.n, spec.chunk):
                _, grads = _chunk_grads(ctx.fn, tensors, spec, needs, start, end, grad_output[start:end])
                for buf, g, idx, c in zip(buffers, grads, spec.indices, spec.cols):
                    if buf is not None and g is not None:
                        _accumulate(buf, _slice(idx, start, end), c, g)
        return (None, None, *buffers)


def _spec(rows: Sequence[Rows], chunk_size: int | None, analytic: bool = False) -> _Spec:
    n = rows[0].n
    for r in rows:
        if r.n != n:
            raise ValueError("all Rows must select the same number of rows")
    width = max(r.width for r in rows)
    return _Spec(
        indices=tuple(r.index for r in rows),
        cols=tuple(r.cols for r in rows),
        chunk=resolve_chunk_size(chunk_size, width),
        n=n,
        analytic=analytic,
        linear=tuple(isinstance(r.tensor, LinearLogits) for r in rows),
    )


def chunked_sum(
    fn: Callable[..., Tensor],
    rows: Sequence[Rows],
    *,
    chunk_size: int | None,
    scale: Tensor,
    analytic: bool = False,
) -> Tensor:
    """``scale * fn(*selected rows).sum()``, one chunk of rows at a time (see the module docstring).

    ``fn`` maps chunk tensors (in the order of ``rows``; floating ones up-cast to fp32,
    fp64 kept) to a per-row tensor ``[n]``, differentiated by local autograd. With
    ``analytic=True`` it is instead called as ``fn(*chunks, needs=(bool, ...))`` and returns
    ``(per_row [n], grads)``: for each input, the gradient of ``per_row.sum()`` with respect
    to its chunk when ``needs[i]`` (else None). The chunks are fresh copies the function may
    overwrite, so a closed-form gradient costs a few chunk-sized buffers instead of an
    autograd graph. ``scale`` is a 0-dim tensor (typically ``1 / denominator``), a constant.
    """
    spec = _spec(rows, chunk_size, analytic)
    if any(spec.linear) and not analytic:
        raise ValueError("LinearLogits need a row function with closed-form gradients (analytic=True)")
    flat = [
        t
        for r in rows
        for t in ((r.tensor.hidden, r.tensor.weight) if isinstance(r.tensor, LinearLogits) else (r.tensor,))
    ]
    need_grad = torch.is_grad_enabled() and any(t.requires_grad for t in flat)
    return _ChunkedSum.apply(fn, spec, scale.detach(), need_grad, *flat)


def chunked_map(fn: Callable[..., Tensor], rows: Sequence[Rows], *, chunk_size: int | None) -> Tensor:
    """``fn(*selected rows)`` stacked over all chunks (``[N, ...]``); backward recomputes per chunk."""
    rows = [Rows(r.tensor.materialize(), r.index, r.cols) if isinstance(r.tensor, LinearLogits) else r for r in rows]
    spec = _spec(rows, chunk_size)
    return _ChunkedMap.apply(fn, spec, *(r.tensor for r in rows))
