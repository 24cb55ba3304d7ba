"""Number formats: the bytes of a weight, an activation and a KV entry, and the type a matmul computes in.

A model's ``dtype`` is its activations' (and unquantised tensors') type. ``quantization`` names a scheme
for the decoder's linear layers (q/k/v/o, gate/up, down), as vLLM's ``--quantization`` does; the
embedding, the norms and the LM head stay in ``dtype`` (as AWQ, GPTQ and vLLM's FP8 leave them)::

    scheme   weights  scales                          matmuls compute in
    none     dtype    —                               dtype
    w8a16    int8     fp16, one per group_size inputs dtype (dequantised as they stream: DEQUANT_OPS_PER_WEIGHT)
    w4a16    int4     fp16, one per group_size inputs dtype (ditto)
    w8a8     int8     fp16, one per output channel    int8
    fp8      fp8      fp16, one per output channel    fp8

A compute type the device has no peak for runs at its fp16 peak (``costmodel.peak_flops``): an FP8
checkpoint on a card without FP8 units is run weight-only, as vLLM's FP8 Marlin kernel does on Ampere.
The engine's ``kv_cache_dtype`` (vLLM's ``--kv-cache-dtype``) sets the bytes of each cached K and V
entry; attention still computes in ``dtype``.
"""
from __future__ import annotations

from dataclasses import dataclass

FORMAT_BYTES = {"fp32": 4.0, "fp16": 2.0, "bf16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5}
SCALE_BYTES = 2.0       # every scheme's scales are fp16 (AWQ, GPTQ, compressed-tensors' W4A16 and W8A8)


@dataclass(frozen=True)
class Scheme:
    weights: str | None     # the linear layers' weight format (None: the model's dtype)
    compute: str | None     # what their matmuls compute in (None: the model's dtype, weights dequantised)
    grouped: bool           # scales per group of ``quant_group_size`` inputs, else one per output channel


SCHEMES = {"none": Scheme(None, None, False), "w8a16": Scheme("int8", None, True),
           "w4a16": Scheme("int4", None, True), "w8a8": Scheme("int8", "int8", False),
           "fp8": Scheme("fp8", "fp8", False)}
KV_CACHE_DTYPES = {"auto": None, "fp8": "fp8", "fp8_e4m3": "fp8", "fp8_e5m2": "fp8", "int8": "int8"}


def act_bytes(model) -> float:
    """Bytes of one activation or message element: the model's dtype (functional mode computes in fp32, so
    its messages are fp32)."""
    return FORMAT_BYTES[model.dtype]


def kv_bytes(model, kv_cache_dtype: str = "auto") -> float:
    """Bytes of one cached K or V element."""
    return FORMAT_BYTES[KV_CACHE_DTYPES[kv_cache_dtype] or model.dtype]


def weight_format(model) -> str:
    return SCHEMES[model.quantization].weights or model.dtype


def matmul_compute(model) -> str:
    return SCHEMES[model.quantization].compute or model.dtype


def weight_only(model) -> bool:
    """The linear layers' weights are stored narrower than the type they are multiplied in."""
    scheme = SCHEMES[model.quantization]
    return scheme.weights is not None and scheme.compute is None


def linear_bytes(model, n_in: int, n_out: int) -> float:
    """Bytes of one [n_out, n_in] linear weight in the model's scheme, its scales included."""
    scheme = SCHEMES[model.quantization]
    if scheme.weights is None:
        return n_in * n_out * FORMAT_BYTES[model.dtype]
    groups = -(-n_in // model.quant_group_size) if scheme.grouped else 1
    return n_in * n_out * FORMAT_BYTES[scheme.weights] + n_out * groups * SCALE_BYTES


__all__ = ["FORMAT_BYTES", "KV_CACHE_DTYPES", "SCALE_BYTES", "SCHEMES", "act_bytes", "kv_bytes", "linear_bytes",
           "matmul_compute", "weight_format", "weight_only"]
