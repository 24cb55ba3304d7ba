"""OpenAI's request bodies and error format, as vLLM's server accepts and answers them.

Every field a client may send is in one of three places:

- **honoured**: a declared field below that changes what comes back (``prompt`` lists, ``n``,
  ``max_tokens``, ``stop``, ``echo``, ``logprobs``, ``ignore_eos`` …);
- **accepted**: sampling knobs that only shape *which* token a model samples (``temperature``,
  ``top_p``, penalties …): checked for range as vLLM does, and — in performance mode, where no
  weights run — without effect on the synthetic text or on the timing; in functional mode
  ``temperature`` and ``seed`` drive the real sampler;
- **refused**: fields whose answer needs weights or features this emulation has not got
  (``NEEDS_WEIGHTS``): a 400 naming the field, never a silent ignore.

Fields no version of the API defines are ignored, as vLLM ignores them.
"""
from __future__ import annotations

from typing import Annotated, Any, Optional, Union

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

ERROR_TYPES = {400: "BadRequestError", 404: "NotFoundError", 405: "BadRequestError", 413: "BadRequestError",
               422: "BadRequestError", 429: "RateLimitError", 500: "InternalServerError",
               503: "ServiceUnavailableError"}
RETRY_AFTER_S = 1            # a refused (429) client's wait before trying again: the next epochs free room
MAX_LOGPROBS = 20            # vLLM's default --max-logprobs

Finite = Annotated[float, Field(allow_inf_nan=False)]


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param = status, message, param

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": ERROR_TYPES.get(self.status, "BadRequestError"),
                          "param": self.param, "code": self.status}}

    def response(self) -> JSONResponse:
        headers = {"Retry-After": str(RETRY_AFTER_S)} if self.status in (429, 503) else None
        return JSONResponse(self.body(), status_code=self.status, headers=headers)


class StreamOptions(BaseModel):
    include_usage: bool = False
    continuous_usage_stats: bool = False


class Sampling(BaseModel):
    """The parameters both endpoints take; unknown fields are accepted and ignored, as vLLM does."""
    model_config = ConfigDict(extra="allow")
    model: Optional[str] = None                      # None: the served model, as vLLM takes it
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    max_tokens: Optional[int] = Field(None, ge=1)
    stop: Union[str, list[str], None] = None
    include_stop_str_in_output: bool = False
    n: int = Field(1, ge=1, le=128)
    temperature: Optional[Finite] = Field(None, ge=0)
    top_p: Optional[Finite] = Field(None, gt=0, le=1)
    top_k: Optional[int] = Field(None, ge=-1)
    min_p: Optional[Finite] = Field(None, ge=0, le=1)
    presence_penalty: Optional[Finite] = Field(None, ge=-2, le=2)
    frequency_penalty: Optional[Finite] = Field(None, ge=-2, le=2)
    repetition_penalty: Optional[Finite] = Field(None, gt=0)
    seed: Optional[int] = None
    ignore_eos: bool = False
    min_tokens: int = Field(0, ge=0)
    user: Optional[str] = None
    priority: int = 0                                # vLLM's: lower is sooner (needs --scheduling-policy priority)


class CompletionBody(Sampling):
    prompt: Union[str, list[int], list[str], list[list[int]], None] = None
    echo: bool = False
    logprobs: Optional[int] = Field(None, ge=0, le=MAX_LOGPROBS)
    best_of: Optional[int] = Field(None, ge=1)


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: Union[str, list[dict], None] = None


class ChatBody(Sampling):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: Optional[int] = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: Optional[int] = Field(None, ge=0, le=MAX_LOGPROBS)
    echo: bool = False


def _set(value: Any) -> bool:
    return value not in (None, [], {}, "", False)


# field → (when it is refused, why): what needs the model's weights or a feature not emulated here
NEEDS_WEIGHTS: dict[str, tuple] = {
    "suffix": (_set, "suffix (insertion) is not supported, as in vLLM"),
    "best_of": (lambda v: v is not None and v > 1, "best_of > 1 is not supported (vLLM's V1 engine has none); use n"),
    "logit_bias": (_set, "logit_bias needs the model's logits; none are computed in performance mode"),
    "allowed_token_ids": (_set, "allowed_token_ids needs the model's logits"),
    "bad_words": (_set, "bad_words needs the model's logits"),
    "stop_token_ids": (_set, "stop_token_ids: the synthetic text has no token ids; use stop strings"),
    "prompt_logprobs": (lambda v: v is not None, "prompt_logprobs is not computed; use echo with logprobs"),
    "tools": (_set, "tool calling needs a model that writes calls; this rack writes synthetic text"),
    "functions": (_set, "function calling needs a model that writes calls; this rack writes synthetic text"),
    "tool_choice": (lambda v: v not in (None, "none", "auto"), "tool_choice: no tools can be called here"),
    "function_call": (lambda v: v not in (None, "none", "auto"), "function_call: no functions can be called here"),
    "response_format": (lambda v: isinstance(v, dict) and v.get("type", "text") != "text",
                        "structured output (json_object, json_schema) needs the model's logits; only text is written"),
    "guided_json": (_set, "guided decoding needs the model's logits"),
    "guided_regex": (_set, "guided decoding needs the model's logits"),
    "guided_choice": (_set, "guided decoding needs the model's logits"),
    "guided_grammar": (_set, "guided decoding needs the model's logits"),
    "structured_outputs": (_set, "structured output needs the model's logits"),
    "audio": (_set, "audio output is not emulated"),
    "modalities": (lambda v: _set(v) and list(v) != ["text"], "only text output is emulated"),
    "return_tokens_as_token_ids": (_set, "the synthetic text has no token ids"),
    "lora_request": (_set, "LoRA adapters are not emulated"),
}


def refused_field(body: BaseModel) -> ApiError | None:
    """The first field of ``body`` this emulation cannot answer, as an OpenAI 400 naming it."""
    given = {name: getattr(body, name) for name in body.model_fields_set if name in NEEDS_WEIGHTS}
    given.update({k: v for k, v in (body.model_extra or {}).items() if k in NEEDS_WEIGHTS})
    for name, value in given.items():
        when, why = NEEDS_WEIGHTS[name]
        try:
            hit = when(value)
        except TypeError:
            hit = True
        if hit:
            return ApiError(400, why, name)
    return None

