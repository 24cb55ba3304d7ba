"""A card's memory ledger: ask (``can_allocate``), then act (``allocate``)."""
from __future__ import annotations

from rsd_ray.config import GIB


def size(nbytes: float) -> str:
    """Bytes in GiB, or MiB below one GiB (a small model's shards would read 0.00 GiB)."""
    return f"{nbytes / GIB:.2f} GiB" if nbytes >= GIB else f"{nbytes / 2 ** 20:.2f} MiB"


class MemoryBudgetError(MemoryError):
    """An allocation that would exceed the card's DRAM budget."""


class MemoryLedger:
    def __init__(self, card: str, budget: int):
        self.card, self.budget = card, budget
        self.regions: dict[str, int] = {}
        self.peak = 0

    @property
    def used(self) -> int:
        return sum(self.regions.values())

    def can_allocate(self, nbytes: int) -> bool:
        return self.used + nbytes <= self.budget

    def allocate(self, region: str, nbytes: int) -> None:
        if nbytes < 0:
            raise ValueError(f"{self.card}: negative allocation {nbytes} for {region}")
        if not self.can_allocate(nbytes):
            raise MemoryBudgetError(
                f"{self.card}: allocating {size(nbytes)} for {region} would use {size(self.used + nbytes)} of a "
                f"{size(self.budget)} budget (held: {', '.join(f'{k} {size(v)}' for k, v in self.regions.items()) or 'nothing'})")
        self.regions[region] = self.regions.get(region, 0) + nbytes
        self.peak = max(self.peak, self.used)

    def free(self, region: str) -> None:
        self.regions.pop(region, None)
