"""Disaggregated prefill and decode: a request is prefilled on one pool, its KV cache moves to the other,
and it decodes there — as vLLM's disaggregated serving (its proxy and NixlConnector), NVIDIA Dynamo and
llm-d run it.

::

    arrival ─▶ router (prefill pool) ─▶ prefill instance: the prompt, one token sampled (max_tokens 1; the
               proxy throws that token away) ─▶ finished here: its KV cache, prompt_len tokens on every card
    ─▶ router (decode pool, fresh telemetry) ─▶ rank k's KV of prompt_len − 1 tokens from prefill card k to
               decode card k (pools of unequal TP: from the cards that hold its heads, ``Handoffs.flows``)
               over the link model (``interconnect/transfers.py``: PCIe, NIC and ToR;
               contention; degraded links)
    ─▶ decode instance: arrives when its KV has (``Submit.kv_tokens``: prompt_len − 1 tokens computed; the
               last is computed again to sample the first token, as a full prefix-cache hit is) ─▶ decodes

The prefill pool is the first ``router.prefill_instances`` instances (placement order: server by server),
the rest decode. The prefill pool takes what the admission bound allows and refuses the rest (429); a
request it has prefilled was accepted, so the decode pool always takes it (it queues there, as a
decode instance queues a KV pull). The decode pool is routed, and the KV move priced, when the
prefill's finish comes back with its epoch: a step that ends after the epoch's end is reported with
that epoch, so a long prefill's decode instance learns of it before its KV arrives and starts it at its
first step after; a short prefill's waits for the next boundary (``--epoch``: as the router's staleness).

Faults: a prefill instance lost before its request finished → the request is prefilled again in the
prefill pool; a decode instance lost → its requests are computed again in the decode pool (their KV died
with it), keeping the tokens they have — as any retried request.
"""
from __future__ import annotations

import dataclasses

from rsd_ray.compiler import Plan
from rsd_ray.compiler.shard import kv_bytes_per_token, kv_flows
from rsd_ray.config import RunSpec
from rsd_ray.engine.request import Handoff, RequestRecord, Submit
from rsd_ray.interconnect.topology import Topology
from rsd_ray.interconnect.transfers import Transfers

PREFILL, DECODE = 0, 1          # the router's pools


class Handoffs:
    def __init__(self, spec: RunSpec, plan: Plan, topology: Topology):
        self.groups = plan.placement.groups
        self.kv_heads = spec.model.num_kv_heads
        self.head_bytes = kv_bytes_per_token(spec.model, spec.model.num_kv_heads, spec.engine.kv_cache_dtype)
        self.layers = spec.model.num_layers if spec.router.kv_transfer == "layerwise" else 0
        self.transfers = Transfers(topology)
        self.prefilling: dict[int, Submit] = {}    # rid → as accepted (its whole max_tokens), in the prefill pool
        self.handed: dict[int, Handoff] = {}       # rid → its handoff, once in the decode pool
        self.arrival: dict[int, float] = {}        # rid → its arrival as the prefill pool had it

    def pool(self, sub: Submit) -> int:
        return DECODE if sub.rid in self.handed else PREFILL

    def for_instance(self, sub: Submit) -> Submit:
        """What the instance is sent: in the prefill pool, the prompt and one token."""
        if sub.rid in self.handed:
            return sub
        accepted = self.prefilling.get(sub.rid)          # placed again (its instance was lost): as it is now
        self.prefilling[sub.rid] = sub.replaced(max_tokens=accepted.max_tokens) if accepted else sub
        return sub.replaced(max_tokens=1, token_times=())

    def prefilled(self, records) -> tuple[list[RequestRecord], list[RequestRecord]]:
        """This epoch's finished records split into those whose prefill ended here (to hand off) and those
        that ended for good (told as they would be aggregated)."""
        done, ended = [], []
        for r in records:
            (done if r.rid in self.prefilling and r.error is None and r.finish is not None else ended).append(r)
        return done, [self.restore(r, arrival=True, forget=True) for r in ended]

    def hand_off(self, record: RequestRecord, decode: int) -> Submit:
        """Move a prefilled request's KV cache to instance ``decode``: rank by rank, card to card."""
        sub = self.prefilling.pop(record.rid)
        tokens = sub.prompt_len - 1                   # what the decode instance takes; it computes the last
        flows = self.flows(self.groups[record.instance], self.groups[decode], tokens)
        ready = self.transfers.move(flows, self._layers_ready(record))
        self.handed[record.rid] = Handoff(instance=record.instance, scheduled=record.scheduled, prefilled=record.finish,
                                          ready=ready, kv_bytes=int(sum(nbytes for _, _, nbytes in flows)))
        self.arrival[record.rid] = sub.arrival
        return sub.replaced(arrival=ready, instance=decode, kv_tokens=tokens, token_times=())

    def flows(self, prefill: tuple[int, ...], decode: tuple[int, ...], tokens: int) -> list[tuple[int, int, float]]:
        """(from card, to card, bytes) of ``tokens`` tokens' KV cache: each decode card pulls the KV heads it
        holds from the prefill cards that hold them (``compiler.shard.kv_sources``)."""
        return kv_flows(self.kv_heads, tokens * self.head_bytes, prefill, decode)

    def _layers_ready(self, record: RequestRecord) -> list[float]:
        """When each part of the KV cache may leave: all of it when the prefill ends, or layer by layer
        (``layerwise``), layer ℓ of L when ℓ + 1 L-ths of the prefill have passed (its layers take equal
        time), every rank's layer ℓ before any rank's next."""
        start, end = record.scheduled, record.finish
        if not self.layers or start is None:
            return [end]
        return [start + (end - start) * (k + 1) / self.layers for k in range(self.layers)]

    def restore(self, r: RequestRecord, arrival: bool = False, forget: bool = False) -> RequestRecord:
        """A record as the request's: its handoff attached (its arrival, with ``arrival``, the prefill
        pool's); one that ended in the prefill pool with its own max_tokens and no token (the prefill's
        is not the answer's). ``forget``: the request has ended."""
        rid = r.rid
        if rid in self.prefilling:
            sub = self.prefilling.pop(rid) if forget else self.prefilling[rid]
            return dataclasses.replace(r, max_tokens=sub.max_tokens, token_times=(), finish=None)
        if rid in self.handed:
            handoff = self.handed.pop(rid) if forget else self.handed[rid]
            when = self.arrival.pop(rid) if forget else self.arrival[rid]
            return dataclasses.replace(r, handoff=handoff, **({"arrival": when} if arrival else {}))
        return r

    def link_bytes(self) -> dict[str, float]:
        """KV bytes moved over each link, ever."""
        return dict(self.transfers.bytes)
