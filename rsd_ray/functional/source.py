"""`rsd-ray run --model DIR`: the workload's requests, each written by the split model as it arrives.

The workload decides when requests arrive and how long their prompts and outputs are, exactly as in
performance mode, so the rack's timing is performance mode's for the same shapes. Each epoch's new
requests get seeded random prompt ids of their lengths, and the split model generates their whole
continuations together (``max_tokens`` each: the workload's output length is the emulated EOS).
The results keep the first few requests' ids and text, and count the tokens computed.
"""
from __future__ import annotations

import numpy as np

SAMPLES = 4            # requests whose prompt and output ids and text the results keep


class FunctionalSource:
    def __init__(self, workload, writer, seed: int):
        """``workload``: the run's request source (``rsd_ray.workload.synthetic.Workload``); ``writer``: a
        ``FunctionalWriter`` (its split model and tokenizer)."""
        self.workload, self.writer, self.seed = workload, writer, seed
        self.samples: list[dict] = []
        self.tokens = 0                                   # prompt and output tokens the split model computed

    def arrivals(self, t0: float, t1: float) -> list:
        subs = self.workload.arrivals(t0, t1)
        if subs:
            vocab = self.writer.model.config.vocab_size
            prompts = [np.random.default_rng([self.seed, s.rid]).integers(0, vocab, s.prompt_len).tolist()
                       for s in subs]
            outs = self.writer.generate(prompts, max(s.max_tokens for s in subs))
            for s, prompt, out in zip(subs, prompts, outs):
                out = out[:s.max_tokens]
                self.tokens += len(prompt) + len(out)
                if len(self.samples) < SAMPLES:
                    self.samples.append({"rid": s.rid, "prompt_ids": prompt, "ids": out,
                                         "text": self.writer.tokenizer.decode(out) if self.writer.tokenizer else None})
        return subs

    def functional(self) -> dict:
        """The results' ``functional`` part: the checkpoint, tokens computed, the first requests' text, and
        the partial sums' bytes on each link (received by the cards, and charged by the link model)."""
        return {"checkpoint": self.writer.checkpoint, "tokens_computed": self.tokens, "samples": self.samples,
                "link_bytes": self.writer.link_bytes()}

    def __getattr__(self, name):
        return getattr(self.workload, name)
