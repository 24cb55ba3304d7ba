"""OpenAI's request bodies and error format, as vLLM's server accepts and answers them."""
from __future__ import annotations

from typing import Annotated, Optional, Union

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

ERROR_TYPES = {400: "BadRequestError", 404: "NotFoundError", 429: "RateLimitError", 500: "InternalServerError",
               503: "ServiceUnavailableError"}

Finite = Annotated[float, Field(allow_inf_nan=False)]


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param = status, message, param

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": ERROR_TYPES[self.status],
                          "param": self.param, "code": self.status}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status)


class StreamOptions(BaseModel):
    include_usage: bool = False
    continuous_usage_stats: bool = False


class Sampling(BaseModel):
    """The parameters both endpoints take; unknown fields are accepted and ignored, as vLLM does."""
    model_config = ConfigDict(extra="allow")
    model: str
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    max_tokens: Optional[int] = Field(None, ge=1)
    stop: Union[str, list[str], None] = None
    n: int = Field(1, ge=1)
    temperature: Optional[Finite] = Field(None, ge=0)
    top_p: Optional[Finite] = Field(None, gt=0, le=1)
    seed: Optional[int] = None
    ignore_eos: bool = False
    min_tokens: int = Field(0, ge=0)
    user: Optional[str] = None


class CompletionBody(Sampling):
    prompt: Union[str, list[int], list[str], list[list[int]]]


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: Union[str, list[dict], None] = None


class ChatBody(Sampling):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: Optional[int] = Field(None, ge=1)
