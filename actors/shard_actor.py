"""A card actor of functional mode: it reads the checkpoint itself and keeps only its own shards."""
from __future__ import annotations

import ray

from rsd_ray.functional.card_shard import CardShard
from rsd_ray.config.checkpoint import read_config
from rsd_ray.functional.checkpoint import load
from rsd_ray.functional.split import SplitModel, card_shard, check_tp


@ray.remote(num_cpus=0)
class CardShardActor:
    def __init__(self, path: str, rank: int, tp: int, budget: int, block_size: int = 16):
        ckpt = load(path)
        model = ckpt.config.model_spec(ckpt.path.name, "fp32")
        self.shard: CardShard = card_shard(ckpt, model, rank, tp, budget, block_size)
        del ckpt                                           # the rest of the model is not this card's

    def begin(self, batch):
        return self.shard.begin(batch)

    def attention(self, layer, *partials):
        return self.shard.attention(layer, *partials)

    def mlp(self, layer, *partials):
        return self.shard.mlp(layer, *partials)

    def logits(self, *partials):
        return self.shard.logits(*partials)

    def release(self, seq):
        self.shard.release(seq)

    def export_kv(self, seq, length, heads):
        return self.shard.export_kv(seq, length, heads)

    def import_kv(self, seq, ranks, *parts):
        return self.shard.import_kv(seq, ranks, *parts)

    def memory(self) -> dict:
        return self.shard.memory()


def split_on_ray(path, tp: int, budget: int, block_size: int = 16, timer=None, resources=None):
    """A SplitModel whose cards are actors (``resources`` each: one ``atom_card`` unless told); Ray must be
    initialised. Their owner's end ends them (a command's Ray, or the rack's controller or serving actor)."""
    config = read_config(path)
    check_tp(config, tp)
    resources = {"atom_card": 1} if resources is None else resources
    cards = [CardShardActor.options(resources=resources).remote(str(path), rank, tp, budget, block_size)
             for rank in range(tp)]
    try:
        ray.get([c.memory.remote() for c in cards])
    except ray.exceptions.RayActorError as err:
        for c in cards:
            ray.kill(c)
        cause = err.cause if getattr(err, "cause", None) else err
        raise getattr(cause, "as_instanceof_cause", lambda: cause)() from None
    return SplitModel(config, cards, on_ray=True, timer=timer)
