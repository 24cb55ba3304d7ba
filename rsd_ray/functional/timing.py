"""Functional steps in virtual time, priced by performance mode's own rules for the same shapes.

The checkpoint's architecture (in fp32, as functional mode computes) is compiled for one TP group on
the rack's first cards; each step's batch shape is priced by those cards' cost models and the
group's collectives over the link model (one-shot all-reduces: every card sends its partial sum to
every other card, as the card actors do), plus the host's step time. The same tables count the bytes
each link carries, which the tests hold to the bytes the card actors really exchanged.
"""
from __future__ import annotations

import numpy as np

from rsd_ray.calibration import HostCost
from rsd_ray.hardware.card_group import LocalCardGroup
from rsd_ray.compiler import compile_plan
from rsd_ray.config import load_run
from rsd_ray.compiler.program import batch_shape
from rsd_ray.compiler.shard import kv_bytes_per_token, kv_flows
from rsd_ray.engine.pricing import GroupSync
from rsd_ray.interconnect.topology import Topology
from rsd_ray.interconnect.transfers import Transfers


def shape(batch: list[tuple[int, list[int], int]]) -> np.ndarray:
    """The batch shape (``compiler.program.batch_shape``) of one step of (sequence, new ids, first
    position) entries, every sequence sampling its last token."""
    n = np.array([[len(ids) for _, ids, _ in batch]])
    p = np.array([[start for _, _, start in batch]])
    return batch_shape(p, n, np.ones_like(n, dtype=bool))


class StepTimer:
    def __init__(self, config, name: str, tp: int, rack="atom-server", cards: tuple[int, ...] | None = None):
        """``rack``: a preset, YAML path or mapping; ``cards``: the ``tp`` cards of it the steps run on (the
        first TP group the compiler places: by default)."""
        model = config.model_spec(name, "fp32")
        spec = load_run(None, rack=rack, tp=tp, model=model, compiler={"collective": "one_shot"})
        self.topology = Topology(spec.rack, spec.device)
        plan = compile_plan(spec, self.topology)
        self.cards = list(cards or plan.placement.groups[0])
        self.num_kv_heads = model.num_kv_heads
        self.head_bytes = kv_bytes_per_token(model, model.num_kv_heads)      # one KV head's, every layer
        self.kv = Transfers(self.topology)            # KV caches taken from a prefill group (disaggregated)
        self.group = LocalCardGroup(self.cards, spec.device, spec.epoch_s)
        self.group.load(plan.programs, plan.memory)
        self.sync = GroupSync(plan.programs[0], self.cards, self.topology, "one_shot", {})
        self.host = HostCost.of(spec.engine, tp)
        self.clock = 0.0

    def step(self, batch) -> float:
        """Price one step from the current virtual time; returns its duration."""
        x = shape(batch)
        segments = self.group.propose(x, self.clock)
        duration = float(self.sync.run_steps(x, segments, self.host)[0][0])
        self.group.accept([self.clock], x)
        self.clock += duration
        return duration

    def take_kv(self, prefill: "StepTimer", tokens: int) -> None:
        """A sequence's KV cache of ``tokens`` tokens moved from ``prefill``'s cards to these, each card's heads
        from the prefill cards that hold them (``compiler.shard.kv_sources``)."""
        self.kv.move(kv_flows(self.num_kv_heads, tokens * self.head_bytes, prefill.cards, self.cards), [self.clock])

    def card_to_card_bytes(self) -> dict[str, float]:
        """Bytes the collectives (and KV caches taken) put on each directed link so far."""
        out = {name: b for name, b in self.sync.link_bytes().items() if b}
        for name, b in self.kv.bytes.items():
            out[name] = out.get(name, 0) + b
        return out

    def received_bytes(self, received: list[dict], kv_from: "StepTimer | None" = None,
                       kv: list[dict] = ()) -> dict[str, float]:
        """Bytes each link really carried: what every card took from each other card (``received``, each
        card's by source rank, as ``CardShard.memory`` says), and the KV bytes each took from ``kv_from``'s
        cards (``kv``, each card's by source rank), laid on the links of their path."""
        moved = [(self.cards[int(src)], self.cards[dst], n) for dst, by_src in enumerate(received)
                 for src, n in by_src.items()]
        moved += [(kv_from.cards[int(src)], self.cards[dst], n) for dst, by_src in enumerate(kv)
                  for src, n in by_src.items() if n]
        out: dict[str, float] = {}
        for a, c, nbytes in moved:
            for link in self.topology.card_path(a, c):
                out[link.name] = out.get(link.name, 0) + nbytes
        return out

    def host_bytes(self) -> dict[int, float]:
        """Each card's External HDMA bytes (token ids in, logits out) so far."""
        return {f.card: f.host_link_bytes for f in self.group.frames(self.clock)}
