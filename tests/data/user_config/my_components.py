"""A user's own allocator and loss, outside the package: one Python file (and one YAML file each)."""

from capdistill.allocation import Allocator, RoundContext
from capdistill.losses import DistillLoss, forward_kl, reverse_kl


class Alternating(Allocator):
    """Everything on `favourite` in even rounds, an equal split in odd ones."""

    name = "alternating"

    def __init__(self, capabilities: list[str], seed: int = 0, favourite: str = "math") -> None:
        super().__init__(capabilities, seed)
        if favourite not in self.capabilities:
            raise ValueError(f"allocator.favourite: {favourite!r} is not a capability")
        self.favourite = favourite

    def allocate(self, context: RoundContext) -> dict[str, float]:
        if context.round % 2:
            return {c: 1.0 for c in self.capabilities}
        return {c: float(c == self.favourite) for c in self.capabilities}


class SymmetricKL(DistillLoss):
    """The mean of forward and reverse KL."""

    name = "skl"

    def kd(self, student_logits, teacher_logits, mask, teacher_mask, num_items):
        kl = forward_kl(student_logits, teacher_logits, mask, self.temperature, num_items=num_items)
        return 0.5 * (kl + reverse_kl(student_logits, teacher_logits, mask, self.temperature, num_items=num_items))
