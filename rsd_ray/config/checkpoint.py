"""A Hugging Face checkpoint's ``config.json``, read as a model spec (the weights: ``rsd_ray.functional``).

``--model DIR`` names a checkpoint directory wherever a model preset is taken; the rack is compiled
from its architecture.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from rsd_ray.config.errors import ConfigError
from rsd_ray.config.schema import read_spec
from rsd_ray.config.specs import ModelSpec


@dataclass(frozen=True)
class LlamaConfig:
    """The numbers of a Llama checkpoint's ``config.json`` that the forward pass reads."""
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-5
    rope_theta: float = 500000.0
    rope_scaling: dict | None = None
    max_position_embeddings: int = 8192
    tie_word_embeddings: bool = False
    torch_dtype: str = "float32"
    bos_token_id: int = 256
    eos_token_id: int = 257
    extra: dict = field(default_factory=dict, compare=False)

    @classmethod
    def from_json(cls, data: dict) -> "LlamaConfig":
        heads = data["num_attention_heads"]
        return cls(data["vocab_size"], data["hidden_size"], data["intermediate_size"], data["num_hidden_layers"],
                   heads, data.get("num_key_value_heads", heads), data.get("head_dim") or data["hidden_size"] // heads,
                   data.get("rms_norm_eps", 1e-5), data.get("rope_theta", 10000.0), data.get("rope_scaling"),
                   data.get("max_position_embeddings", 2048), data.get("tie_word_embeddings", False),
                   data.get("torch_dtype", "float32"), _first(data.get("bos_token_id")),
                   _first(data.get("eos_token_id")), data)

    def to_json(self) -> dict:
        return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": self.vocab_size,
                "hidden_size": self.hidden_size, "intermediate_size": self.intermediate_size,
                "num_hidden_layers": self.num_hidden_layers, "num_attention_heads": self.num_attention_heads,
                "num_key_value_heads": self.num_key_value_heads, "head_dim": self.head_dim,
                "rms_norm_eps": self.rms_norm_eps, "rope_theta": self.rope_theta, "rope_scaling": self.rope_scaling,
                "max_position_embeddings": self.max_position_embeddings, "hidden_act": "silu",
                "tie_word_embeddings": self.tie_word_embeddings, "torch_dtype": self.torch_dtype,
                "bos_token_id": self.bos_token_id, "eos_token_id": self.eos_token_id}

    def model_spec(self, name: str, dtype: str | None = None, checkpoint: str = "", where: str = "") -> ModelSpec:
        """The architecture as the compiler's model. Functional mode passes fp32 (it holds and computes every
        tensor, message and KV entry in fp32); by default the file's dtype, as performance mode prices it.
        A mixture of experts (Mixtral's, Qwen-MoE's and DeepSeek's spellings) and a ``quantization_config``
        (``QUANT_METHODS``) are read too."""
        dtype = dtype or {"float16": "fp16", "bfloat16": "bf16"}.get(self.torch_dtype, "fp32")
        where = where or f"{checkpoint or name}/config.json"
        x = self.extra
        experts = x.get("num_local_experts") or x.get("num_experts") or x.get("n_routed_experts") or 0
        moe = dict(num_experts=experts, experts_per_token=x.get("num_experts_per_tok", 0),
                   moe_intermediate_size=x.get("moe_intermediate_size") or 0,
                   num_shared_experts=x.get("n_shared_experts") or 0,
                   first_dense_layers=x.get("first_k_dense_replace") or 0) if experts else {}
        return read_spec(ModelSpec, dict(
            name=name, hidden_size=self.hidden_size, intermediate_size=self.intermediate_size,
            num_layers=self.num_hidden_layers, num_heads=self.num_attention_heads,
            num_kv_heads=self.num_key_value_heads, vocab_size=self.vocab_size,
            max_seq_len=self.max_position_embeddings, head_dim=self.head_dim, tie_embeddings=self.tie_word_embeddings,
            dtype=dtype, checkpoint=checkpoint, **moe,
            sources={"checkpoint": "config.json of the checkpoint directory" if checkpoint else where},
            **_quantization(x.get("quantization_config"), where)), where)


QUANT_METHODS = {("awq", 4): "w4a16", ("gptq", 4): "w4a16", ("awq", 8): "w8a16", ("gptq", 8): "w8a16",
                 ("fp8", None): "fp8", ("rsd-ray", 4): "w4a16", ("rsd-ray", 8): "w8a16"}   # rsd-ray: make-model's


def _quantization(qc: dict | None, where: str) -> dict:
    """A config.json's ``quantization_config`` as the model's scheme and group size."""
    if not qc:
        return {}
    method, bits = qc.get("quant_method"), qc.get("bits")
    scheme = QUANT_METHODS.get((method, bits if method != "fp8" else None))
    if scheme is None:
        known = ", ".join(f"{m} {b}-bit" if b else m for m, b in QUANT_METHODS)
        raise ConfigError(where, "quantization_config.quant_method", f"{method} {bits or ''}".strip(),
                          f"read here: {known}; or describe the model in a YAML with model.quantization")
    group = qc.get("group_size")
    return {"quantization": scheme, **({"quant_group_size": group} if group and group > 0 else {})}


def _first(value):
    return value[0] if isinstance(value, list) else value


def is_checkpoint(path) -> bool:
    return Path(path).is_dir() and (Path(path) / "config.json").is_file()


def read_config(path) -> LlamaConfig:
    root = Path(path)
    if not is_checkpoint(root):
        raise ConfigError("command line", "--model", str(path), "a checkpoint directory has a config.json "
                          "(write a small one with `rsd-ray make-model DIR`)")
    return read_config_file(root / "config.json")


def read_config_file(path) -> LlamaConfig:
    """A ``config.json`` file alone: ``--model PATH/config.json`` prices the architecture it describes
    (performance mode; a directory with weights runs functional mode)."""
    try:
        return LlamaConfig.from_json(json.loads(Path(path).read_text()))
    except UnicodeDecodeError:
        raise ConfigError(str(path), "<file>", "not text", "give a Hugging Face config.json") from None
    except (ValueError, KeyError, TypeError) as err:
        raise ConfigError(str(path), "config", type(err).__name__, f"not a Llama config.json ({err})") from None
