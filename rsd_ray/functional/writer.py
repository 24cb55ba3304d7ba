"""Real text for `rsd-ray run` and `rsd-ray serve` with `--model DIR`: the split model writes each
continuation as its request arrives, and the rack times it token by token as in performance mode.

The text is known when the request is admitted (as performance mode's synthetic words are), so the
output length is the model's own: up to its EOS token (kept, with no text, as vLLM counts it) or
``max_tokens``. The weights run on card shards the executor makes (``split_model``): on Ray one card
actor a rank beside the rack's card actors, their partial sums handed to each other as Ray objects; inline
plain objects. Every step is also priced on the link model (``timing.StepTimer``), so the results can
hold what the cards really received against what the link model charges, link by link. The rack's
virtual timing is the one performance mode gives the requests' shapes.
"""
from __future__ import annotations

import dataclasses
import threading
from collections import Counter

from rsd_ray.compiler import check_plan
from rsd_ray.functional.checkpoint import load
from rsd_ray.functional.timing import StepTimer

CHAT_TEMPLATE = ("<|begin_of_text|>", "{role}: {content}\n", "assistant: ")   # a plain template: no chat headers


class FunctionalWriter:
    def __init__(self, spec, executor):
        """``spec``: the run's (its checkpoint, TP, rack, card memory and pools); ``executor``: the rack's
        executor class (its ``split_model`` and ``card_memory``). A disaggregated rack's prompts are computed
        on its first instance's cards and decoded on its first decode instance's, the KV cache moved
        between them card to card (``SplitModel.take_kv``)."""
        path, tp, budget = spec.model.checkpoint, spec.tp, spec.device.usable_bytes
        ckpt = load(path)
        self.checkpoint, self.executor = path, executor
        self.tokenizer, self.eos = ckpt.tokenizer, ckpt.config.eos_token_id
        split, rack = spec.router.prefill_instances, dataclasses.asdict(spec.rack)
        groups = check_plan(spec).placement.groups
        self.timer = StepTimer(ckpt.config, ckpt.path.name, tp, rack, groups[split])
        self.model = executor.split_model(path, tp, budget, timer=self.timer, beside_rack=True)
        self.prefill = None
        if split:
            timer = StepTimer(ckpt.config, ckpt.path.name, spec.prefill_tp, rack, groups[0])
            self.prefill = executor.split_model(path, spec.prefill_tp, budget, timer=timer, beside_rack=True)
        self.fingerprint = f"rsd-ray-functional-mode:{ckpt.path.name}:tp{tp}"
        self.lock = threading.Lock()                     # HTTP and gRPC handlers may write at once

    def generate(self, prompts: list[list[int]], max_tokens: int, temperature: float = 0.0,
                 seed: int = 0) -> list[list[int]]:
        """Each prompt's continuation (``SplitModel.generate``), on the rack's pools when it has them."""
        return self.model.generate(prompts, max_tokens, temperature, seed, prefill=self.prefill)[0]

    def prompt_ids(self, prompt) -> list[int]:
        """A text prompt through the tokenizer; token ids as given."""
        return self.tokenizer.encode(prompt).ids if isinstance(prompt, str) else list(prompt)

    def chat_ids(self, messages: list[tuple[str, str]]) -> list[int]:
        head, turn, reply = CHAT_TEMPLATE
        text = head + "".join(turn.format(role=r, content=c) for r, c in messages) + reply
        return self.tokenizer.encode(text).ids

    def write(self, ids: list[int], max_tokens: int, min_tokens: int, ignore_eos: bool, temperature: float,
              seed: int) -> list[str]:
        """The text of each generated token: up to and including the first EOS at or after ``min_tokens``
        (unless ``ignore_eos``), at most ``max_tokens``."""
        with self.lock:
            out = self.generate([ids], max_tokens, temperature, seed)[0]
        if not ignore_eos:
            ends = [i for i, t in enumerate(out) if t == self.eos and i >= min_tokens]
            out = out[:ends[0] + 1] if ends else out
        pieces, before = [], ""
        for i in range(len(out)):                         # each token's share of the decoded text
            text = self.tokenizer.decode(out[:i + 1])
            pieces.append(text[len(before):] if text.startswith(before) else text)
            before = text
        return pieces

    def link_bytes(self) -> dict[str, dict[str, float]]:
        """The partial sums' (and KV caches') bytes on each link: what the cards received, and what the link
        model charged for the same steps."""
        received, charged = Counter(), Counter()
        kv_from = self.prefill.timer if self.prefill else None          # the decode cards took KV from there
        with self.lock:
            for model in (self.model, self.prefill) if self.prefill else (self.model,):
                cards = self.executor.card_memory(model)
                received.update(model.timer.received_bytes([c["received"] for c in cards], kv_from,
                                                           [c["kv_received"] for c in cards]))
                charged.update(model.timer.card_to_card_bytes())
        return {"received": dict(received), "link_model": dict(charged)}
