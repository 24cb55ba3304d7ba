"""`rsd-ray make-model` (a small random Llama checkpoint) and `rsd-ray generate` (real tokens from a
checkpoint split over card actors)."""
from __future__ import annotations

import argparse
import json
import sys

from rsd_ray import signals
from rsd_ray.config import ConfigError
from rsd_ray.config.arguments import finite


def add_make_model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", help="the directory to write (config.json, model.safetensors, tokenizer.json)")
    for name, default, what in (("layers", 2, "decoder layers"), ("hidden", 64, "hidden size"),
                                ("heads", 4, "query heads"), ("kv-heads", 2, "KV heads"),
                                ("intermediate", 128, "MLP intermediate size"), ("vocab", 512, "vocabulary (>= 258)"),
                                ("shards", 1, "safetensors files (more than 1: with an index)")):
        p.add_argument(f"--{name}", type=finite(int, 1), default=default, help=f"{what} (default {default})")
    p.add_argument("--seed", type=finite(int, 0), default=0, help="random weights from this seed (default 0)")
    p.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"))
    p.add_argument("--rope-theta", type=finite(float), default=500000.0)
    p.add_argument("--no-rope-scaling", action="store_true", help="plain RoPE (default: Llama 3's rope scaling)")
    p.add_argument("--tie", action="store_true", help="tie the LM head to the embeddings")
    p.add_argument("--quantize", default="none", choices=("none", "w8a16", "w4a16"),
                   help="store the projections as INT8 or INT4 with fp16 scales (default none)")
    p.add_argument("--group-size", type=finite(int, 1), default=32, help="--quantize: weights per scale (default 32)")
    p.add_argument("--experts", type=finite(int, 0), default=0,
                   help="a Mixtral: every MLP a mixture of this many experts of --intermediate (default 0: dense)")
    p.add_argument("--experts-per-token", type=finite(int, 1), default=2, help="--experts: top-k (default 2)")


def make_model(args) -> int:
    from rsd_ray.functional.checkpoint import LLAMA3_ROPE, make_model as write
    if args.rope_theta <= 1:
        raise ConfigError("command line", "--rope-theta", args.rope_theta, "must be > 1")
    try:
        config = write(args.dir, layers=args.layers, hidden=args.hidden, heads=args.heads, kv_heads=args.kv_heads,
                       intermediate=args.intermediate, vocab=args.vocab, seed=args.seed, dtype=args.dtype,
                       rope_theta=args.rope_theta, rope_scaling=None if args.no_rope_scaling else LLAMA3_ROPE,
                       tie=args.tie, shards=args.shards, quantize=args.quantize, group_size=args.group_size,
                       experts=args.experts, experts_per_token=args.experts_per_token)
    except OSError as err:
        raise ConfigError("command line", "DIR", args.dir, f"cannot write there ({err.strerror or err})") from None
    print(f"wrote {args.dir}: {config.num_hidden_layers} layers, hidden {config.hidden_size}, "
          f"{config.num_attention_heads} heads ({config.num_key_value_heads} KV), vocab {config.vocab_size}, "
          f"{config.torch_dtype}" + (f", {args.experts} experts ({args.experts_per_token} a token)" if args.experts else "")
          + (f", projections {args.quantize} (group {args.group_size})" if args.quantize != "none" else ""))
    return 0


def add_generate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="a checkpoint directory (Hugging Face layout)")
    p.add_argument("--tp", type=finite(int, 1), default=1, help="cards the model is split over (default 1)")
    prompt = p.add_mutually_exclusive_group(required=True)
    prompt.add_argument("--prompt", help="text (needs the checkpoint's tokenizer.json)")
    prompt.add_argument("--prompt-ids", help="token ids, e.g. 1,2,3")
    p.add_argument("--max-tokens", type=finite(int, 1), default=16)
    p.add_argument("--temperature", type=finite(float, 0), default=0.0, help="0: greedy (default)")
    p.add_argument("--seed", type=finite(int, 0), default=0, help="with --temperature: the draw's seed")
    p.add_argument("--executor", default="ray", choices=("ray", "inline"),
                   help="ray: every card an actor, partial sums passed card to card (default); inline: one process")
    p.add_argument("--rack", default="atom-server", help="its device's memory is each card's budget")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")


def _prompt_ids(args, tokenizer, vocab: int) -> list[int]:
    if args.prompt_ids is not None:
        try:
            ids = [int(x) for x in args.prompt_ids.split(",") if x.strip()]
        except ValueError:
            raise ConfigError("command line", "--prompt-ids", args.prompt_ids, "give integers: 1,2,3") from None
        bad = [i for i in ids if not 0 <= i < vocab]
        if not ids or bad:
            raise ConfigError("command line", "--prompt-ids", args.prompt_ids,
                              f"give at least one id, each in 0..{vocab - 1}")
        return ids
    if tokenizer is None:
        raise ConfigError("command line", "--prompt", args.prompt, "this checkpoint has no tokenizer.json; "
                          "give --prompt-ids")
    ids = tokenizer.encode(args.prompt).ids
    if not ids:
        raise ConfigError("command line", "--prompt", args.prompt, "an empty prompt has no tokens")
    return ids


def generate(args) -> int:
    from rsd_ray.config import load_run
    from rsd_ray.functional.checkpoint import load
    from rsd_ray.functional.split import check_tp
    from rsd_ray.plugins import get_executor
    from rsd_ray.functional.timing import StepTimer
    ckpt = load(args.model)
    check_tp(ckpt.config, args.tp)
    prompt = _prompt_ids(args, ckpt.tokenizer, ckpt.config.vocab_size)
    budget = load_run(None, rack=args.rack).device.usable_bytes
    eos = ckpt.config.eos_token_id
    timer = StepTimer(ckpt.config, ckpt.path.name, args.tp, args.rack)
    executor = get_executor(args.executor)
    with executor.session(None, args.tp):
        model = executor.split_model(args.model, args.tp, budget, timer=timer)
        with signals.graceful(signals.RECORD):      # a stop signal ends the text after the current token
            ids = model.generate([prompt], args.max_tokens, args.temperature, args.seed, stop=eos,
                                 halt=lambda: signals.first_received() is not None)[0][0]
            cards = executor.card_memory(model)
    text = ckpt.tokenizer.decode(ids) if ckpt.tokenizer is not None else None
    times = model.durations
    virtual = {"ttft_s": times[0], "tpot_s": sum(times[1:]) / (len(times) - 1) if len(times) > 1 else None,
               "e2e_s": sum(times), "rack": args.rack}
    signum = signals.first_received()
    doc = {**signals.status(), "model": str(args.model), "tp": args.tp, "executor": args.executor,
           "prompt_ids": prompt, "ids": ids, "text": text, "virtual": virtual, "cards": cards}
    if args.json:
        json.dump(doc, sys.stdout)
        print()
    else:
        print(" ".join(map(str, ids)))
        if text is not None:
            print(text)
        held = ", ".join(f"card {c['rank']} {c['weights'] / 2 ** 20:.2f} MiB" for c in cards)
        tpot = f", TPOT {virtual['tpot_s'] * 1e3:.3f} ms" if virtual["tpot_s"] else ""
        print(f"{len(ids)} tokens, TP {args.tp} on {args.executor}; on {args.rack}'s cards TTFT "
              f"{virtual['ttft_s'] * 1e3:.3f} ms{tpot} (virtual); weights held: {held}", file=sys.stderr)
    if signum:
        print(f"rsd-ray: generate {signals.reason(signum)} after {len(ids)} tokens", file=sys.stderr)
    return signals.exit_code(0)
