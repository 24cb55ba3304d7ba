"""Tables readable at 80 columns (CI logs, pipes): a cell too wide wraps at spaces and folds a long word
onto the next line, never cut with "…" — a number is shown whole or not at all."""
from __future__ import annotations

from rich.table import Table


class Folding(Table):
    """A rich ``Table`` whose columns fold instead of cutting."""

    def add_column(self, *args, overflow="fold", **kwargs) -> None:
        super().add_column(*args, overflow=overflow, **kwargs)
