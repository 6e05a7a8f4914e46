"""The decision signal: the paper's log-likelihood proxy on a run's dev sets.

A capability's proxy is the mean per-token log-likelihood, under the student, of the
teacher's greedy responses to that capability's dev prompts (the released ReAD code's probe
score). It needs one forward pass and no generation, and it moves smoothly where exact
match on the same items jumps, so the allocator's reward and context read it. The sets are
tokenized and batched once per run; each call is forward passes only.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from capdistill.capabilities import Example
from capdistill.prompting import prompt_ids, response_ids


class Proxy:
    """Scores a model on fixed dev sets: mean per-token log-likelihood of each set's target responses."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        sets: dict[str, list[Example]],
        responses: dict[str, list[str]],
        batch_size: int,
        head_only: bool | None = None,
    ) -> None:
        self.names = list(sets)
        self.batches = []
        for index, name in enumerate(self.names):  # batches never mix sets: a set scores the same in any Proxy
            rows = [
                (index, prompt_ids(tokenizer, e.prompt), response_ids(tokenizer, r))
                for e, r in zip(sets[name], responses[name], strict=True)
            ]
            rows.sort(key=lambda row: len(row[1]) + len(row[2]))  # little padding per batch
            self.batches += [
                self._batch(rows[i : i + batch_size], tokenizer.pad_token_id) for i in range(0, len(rows), batch_size)
            ]
        self.head_only = head_only  # whether `target_logits` may skip the prompt's logits (`decide`)

    @staticmethod
    def _batch(rows: list[tuple[int, list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
        width = max(len(p) + len(r) for _, p, r in rows)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        target = torch.zeros((len(rows), width), dtype=torch.bool)
        for i, (_, p, r) in enumerate(rows):
            ids[i, : len(p) + len(r)] = torch.tensor(p + r)
            attention[i, : len(p) + len(r)] = 1
            target[i, len(p) : len(p) + len(r)] = True
        sets = torch.tensor([index for index, _, _ in rows])
        return {"input_ids": ids, "attention_mask": attention, "target": target[:, 1:], "set": sets}

    def target_logits(self, model: PreTrainedModel, batch: dict[str, torch.Tensor], head_only: bool) -> torch.Tensor:
        """fp32 logits at the target positions only [K, V]. `head_only` runs the output layer on
        those positions alone (most of a small model's forward cost, and of a large vocabulary's
        memory); otherwise the full logits are computed and then selected."""
        device = next(model.parameters()).device
        ids, attention = batch["input_ids"].to(device), batch["attention_mask"].to(device)
        mask = batch["target"].to(device)
        if head_only:
            hidden = model.base_model(input_ids=ids, attention_mask=attention).last_hidden_state[:, :-1]
            return model.get_output_embeddings()(hidden[mask]).float()
        return model(input_ids=ids, attention_mask=attention).logits[:, :-1][mask].float()

    @torch.no_grad()
    def decide(self, model: PreTrainedModel) -> bool:
        """Whether the output layer alone gives `model`'s logits (models that post-process them, by
        soft-capping or scaling, take the full path). A run decides once, on its student base, and
        hands the answer to each of its proxies, so a resumed run's proxies take the same path."""
        was_training = model.training
        model.eval()
        first = self.batches[0]
        full = self.target_logits(model, first, head_only=False)
        try:
            self.head_only = torch.allclose(self.target_logits(model, first, head_only=True), full, atol=1e-4)
        except (AttributeError, TypeError):
            self.head_only = False
        model.train(was_training)
        return self.head_only

    @torch.no_grad()
    def __call__(self, model: PreTrainedModel) -> dict[str, float]:
        """The proxy per set name (nats per token, <= 0; higher is better)."""
        if self.head_only is None:
            self.decide(model)
        was_training = model.training
        model.eval()
        total = torch.zeros(len(self.names), dtype=torch.float64)
        count = torch.zeros(len(self.names), dtype=torch.float64)
        for batch in self.batches:
            logits = self.target_logits(model, batch, self.head_only)
            mask = batch["target"]
            targets = batch["input_ids"][:, 1:][mask].to(logits.device)
            logp = (logits.gather(-1, targets[:, None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)).cpu()
            rows = batch["set"][:, None].expand_as(mask)[mask]
            total.index_add_(0, rows, logp.double())
            count.index_add_(0, rows, torch.ones_like(logp, dtype=torch.float64))
        model.train(was_training)
        return {name: float(t / max(c, 1.0)) for name, t, c in zip(self.names, total, count)}
