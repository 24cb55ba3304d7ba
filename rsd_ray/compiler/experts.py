"""Expert parallelism: which card holds which experts, and how much of the traffic each expert takes.

Each card of a TP group holds ``num_experts / tp`` whole experts, in order (card r: experts
r·E/tp … (r+1)·E/tp − 1, as vLLM's expert parallelism lays them out). A token picks
``experts_per_token`` (k) experts; expert e is picked by a share q_e of the tokens, Σ q_e = k, each
q_e ≤ 1 (a token picks an expert once). With ``expert_skew`` s the popularity follows Zipf's law,
p ∝ rank^−s, and which expert holds which rank is a permutation drawn from the run's seed:
s = 0 spreads the tokens evenly; s = 1 gives the busiest of 8 experts 2.9 times the mean share.

From the shares, per step of T tokens, card r computes T·Q_r token-expert pairs (Q_r = Σ over its
experts of q_e) and reads the weights of the experts some token picked: expert e is picked by at
least one of T tokens with probability 1 − (1 − q_e)^T (``active_fraction``). The step waits for the
busiest card.
"""
from __future__ import annotations

import numpy as np


def expert_shares(num_experts: int, experts_per_token: int, skew: float, seed: int) -> np.ndarray:
    """q_e for every expert: the share of tokens that pick it (Σ = k, each ≤ 1)."""
    ranks = np.random.default_rng(seed).permutation(num_experts) + 1
    popularity = ranks.astype(float) ** -skew
    q = experts_per_token * popularity / popularity.sum()
    for _ in range(num_experts):                # an expert taken by every token: its excess spread on the rest
        full = q >= 1.0
        if not (q > 1.0).any():
            break
        q[~full] += (q[full] - 1.0).sum() * q[~full] / q[~full].sum()
        q[full] = 1.0
    return q


def card_shares(q: np.ndarray, tp: int) -> tuple[tuple[float, ...], ...]:
    """The shares of the experts each card holds, card by card."""
    per = len(q) // tp
    return tuple(tuple(float(x) for x in q[r * per:(r + 1) * per]) for r in range(tp))


def active_fraction(q: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """(k,) expected fraction of a card's expert weights read for k steps of ``tokens`` tokens: the mean over
    its experts of the chance that at least one token picks each."""
    return 1.0 - ((1.0 - q[None, :]) ** tokens[:, None]).mean(axis=1)


__all__ = ["active_fraction", "card_shares", "expert_shares"]
