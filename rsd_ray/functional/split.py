"""A real model split over ``tp`` cards: the host drives a step as a chain of card calls.

Each call hands every card the partial sums all cards made in the call before; inline these are
the arrays themselves, on Ray they are ObjectRefs, so each card actor fetches its peers' partials
straight from their object stores and the host never holds the data (an all-reduce done card to
card). Only the logits' vocabulary slices come back to the host, which joins them.
"""
from __future__ import annotations

import numpy as np

from rsd_ray.compiler.shard import kv_sources
from rsd_ray.config import ConfigError
from rsd_ray.functional.card_shard import CardShard, cut
from rsd_ray.functional.checkpoint import load
from rsd_ray.functional.kernels import sample
from rsd_ray.hardware.ledger import MemoryBudgetError


def check_tp(config, tp: int) -> None:
    """The degrees the compiler's split can cut exactly (the compiler's own rule, ``ModelSpec.tp_problem``)."""
    why = config.model_spec("the checkpoint").tp_problem(tp)
    if why:
        raise ConfigError("command line", "--tp", tp, why)


def card_shards(path, tp: int, budget: int, block_size: int = 16) -> list[CardShard]:
    """Inline: each card's shards cut from one read of the checkpoint."""
    ckpt = load(path)
    check_tp(ckpt.config, tp)
    model = ckpt.config.model_spec(ckpt.path.name, "fp32")
    return [card_shard(ckpt, model, rank, tp, budget, block_size) for rank in range(tp)]


def card_shard(ckpt, model, rank: int, tp: int, budget: int, block_size: int = 16) -> CardShard:
    """One rank's card: its slices of the checkpoint; refused with the numbers when they overflow ``budget``."""
    try:
        return CardShard(ckpt.config, model, rank, tp, cut(ckpt.weights, model, rank, tp), budget, block_size)
    except MemoryBudgetError as err:
        raise ConfigError(str(ckpt.path), "tp", tp, f"a card's shards do not fit its memory: {err}; raise --tp "
                          "or use a device with more memory") from None


class SplitModel:
    """``cards``: CardShard objects (inline) or card-shard actor handles (Ray); ``timer``: a
    ``timing.StepTimer`` that gives each step its virtual duration."""

    def __init__(self, config, cards: list, on_ray: bool = False, timer=None):
        self.config, self.cards, self.on_ray, self.timer = config, cards, on_ray, timer
        self.next_seq = 0
        self.host_bytes = [0] * len(cards)               # each card's token ids in and logits out
        self.durations: list[float] = []                # virtual seconds of each step (with a timer)

    def _all(self, method: str, *args) -> list:
        return [self._call(c, method, *args) for c in self.cards]

    def _call(self, card, method: str, *args):
        """One card's ``method``: on Ray a task (its ObjectRef), inline the answer."""
        return getattr(card, method).remote(*args) if self.on_ray else getattr(card, method)(*args)

    def step(self, batch: list[tuple[int, list[int], int]]) -> np.ndarray:
        """Run one step of (sequence, new ids, first position) entries; the logits at each sequence's last new
        token [len(batch), vocab]."""
        parts = self._all("begin", batch)
        for layer in range(self.config.num_hidden_layers):
            parts = self._all("attention", layer, *parts)
            parts = self._all("mlp", layer, *parts)
        slices = self._all("logits", *parts)
        if self.on_ray:
            import ray
            slices = ray.get(slices)
        tokens = sum(len(ids) for _, ids, _ in batch)
        for rank, part in enumerate(slices):
            self.host_bytes[rank] += 8 * tokens + int(part.nbytes)   # int64 ids in, its logits out
        if self.timer is not None:
            self.durations.append(self.timer.step(batch))
        return np.concatenate(slices, axis=1)[:, :self.config.vocab_size]

    def release(self, seq: int) -> None:
        self._all("release", seq)

    def take_kv(self, seqs: list[int], lengths: list[int], prefill: "SplitModel") -> None:
        """Each sequence's first ``lengths`` positions of KV cache from ``prefill``'s cards: each card here
        takes the heads it holds from the prefill cards that hold them (``compiler.shard.kv_sources``; rank
        k's from rank k's when the TP degrees are equal), on Ray an object each, fetched by the decode card
        from the prefill card's store."""
        sources = kv_sources(self.config.num_key_value_heads, len(prefill.cards), len(self.cards))
        for seq, n in zip(seqs, lengths):
            if n == 0:
                continue
            done = []
            for card, reads in zip(self.cards, sources):
                parts = [self._call(prefill.cards[i], "export_kv", seq, n, heads) for i, heads in reads]
                done.append(self._call(card, "import_kv", seq, [i for i, _ in reads], *parts))
            if self.on_ray:
                import ray
                ray.get(done)
            if self.timer is not None:
                self.timer.take_kv(prefill.timer, n)

    def generate(self, prompts: list[list[int]], max_tokens: int, temperature: float = 0.0, seed: int = 0,
                 stop: int | None = None, halt=lambda: False, prefill: "SplitModel | None" = None
                 ) -> tuple[list[list[int]], list[np.ndarray]]:
        """Prefill every prompt in one step, then decode them together; returns the new ids of each and
        the logits of every step (for the tests). ``halt()`` true: end after the current step (a stop signal).
        ``prefill``: disaggregated — the prompts are computed on that model's cards, their KV cache but the
        last token's moved to these, which compute the last token and decode (``rack/handoff.py``)."""
        seqs = list(range(self.next_seq, self.next_seq + len(prompts)))
        self.next_seq += len(prompts)
        rngs = [np.random.default_rng([seed, i]) if temperature > 0 else None for i in range(len(prompts))]
        out, steps = [[] for _ in prompts], []
        if prefill is None:
            logits = self.step([(s, list(p), 0) for s, p in zip(seqs, prompts)])
        else:
            prefill.step([(s, list(p), 0) for s, p in zip(seqs, prompts)])     # its sampled token is dropped
            self.take_kv(seqs, [len(p) - 1 for p in prompts], prefill)
            for s in seqs:
                prefill.release(s)
            logits = self.step([(s, [p[-1]], len(p) - 1) for s, p in zip(seqs, prompts)])
        live = list(range(len(prompts)))
        while True:
            steps.append(logits)
            for row, i in enumerate(live):
                out[i].append(sample(logits[row], temperature, rngs[i]))
            live = [i for i in live if len(out[i]) < max_tokens and out[i][-1] != stop]
            if not live or halt():
                break
            logits = self.step([(seqs[i], [out[i][-1]], len(prompts[i]) + len(out[i]) - 1) for i in live])
        for s in seqs:
            self.release(s)
        return out, steps
