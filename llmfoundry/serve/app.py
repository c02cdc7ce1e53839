"""`foundry serve`: an OpenAI-compatible HTTP API (FastAPI + uvicorn) over the batching engine.

Endpoints: GET /v1/models, POST /v1/completions, POST /v1/chat/completions, with `max_tokens`, `temperature`
(0 = greedy), `top_p`, `stop`, `seed` and `stream` (server-sent events, `data: {json}` chunks ending with
`data: [DONE]`, as the OpenAI API sends them). Bad requests (malformed JSON, wrong fields, an unknown model, a
prompt that does not fit the window, negative max_tokens) get a 4xx with OpenAI's error shape,
`{"error": {"message", "type", "param", "code"}}`, and the server keeps serving.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any, AsyncIterator, Literal, Union

from fastapi import FastAPI, Request as HTTPRequest
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from llmfoundry.serve.engine import Engine, Request, Result, Sampling
from llmfoundry.serve.loading import Loaded


class _Options(BaseModel):
    model_config = ConfigDict(extra="ignore")  # clients send fields we do not use (n=1, user, ...)

    model: str
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0, le=2)
    top_p: float = Field(default=1.0, gt=0, le=1)
    stop: Union[str, list[str], None] = None
    seed: int | None = None
    stream: bool = False


class CompletionRequest(_Options):
    prompt: Union[str, list[str]]


class Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class ChatRequest(_Options):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)


class APIError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


def _error(status: int, message: str, param: str | None = None, code: str | None = None) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse(status_code=status,
                        content={"error": {"message": message, "type": kind, "param": param, "code": code}})


def create_app(loaded: Loaded, engine: Engine, *, default_max_tokens: int = 16) -> FastAPI:
    """The API for one model, generating through `engine`."""
    from llmfoundry.data.finetune import chat_renderer

    app = FastAPI(title="foundry serve", docs_url=None, redoc_url=None)
    render = chat_renderer(loaded.tokenizer, None)
    chatml = getattr(loaded.tokenizer, "chat_template", None) is None  # our fallback: its end tag is plain text

    @app.exception_handler(RequestValidationError)
    async def invalid(_: HTTPRequest, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        if first.get("type") == "json_invalid":
            return _error(400, f"the request body is not valid JSON ({first.get('msg')})")
        return _error(400, f"{where}: {first.get('msg')}", param=where or None)

    @app.exception_handler(APIError)
    async def api_error(_: HTTPRequest, err: APIError) -> JSONResponse:
        return _error(err.status, err.message, err.param, err.code)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": loaded.name, "object": "model", "created": 0,
                                            "owned_by": "llmfoundry"}]}

    def sampling(body: _Options, prompt_ids: list[int], max_tokens: int | None, extra_stop: list[str]) -> Sampling:
        if body.model != loaded.name:
            raise APIError(404, f"model {body.model!r} does not exist; this server has {loaded.name!r}",
                           param="model", code="model_not_found")
        tokens = max_tokens or default_max_tokens
        if len(prompt_ids) + tokens > loaded.window:
            raise APIError(400, f"this model's window is {loaded.window} tokens; the prompt has {len(prompt_ids)} "
                           f"and max_tokens asks for {tokens} more", param="max_tokens",
                           code="context_length_exceeded")
        stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
        return Sampling(max_tokens=tokens, temperature=body.temperature, top_p=body.top_p,
                        stop=[s for s in stop + extra_stop if s], seed=body.seed)

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest) -> Any:
        prompt = body.prompt if isinstance(body.prompt, str) else _single(body.prompt)
        ids = loaded.tokenizer(prompt)["input_ids"]
        s = sampling(body, ids, body.max_tokens, [])
        return await _respond(engine, ids, s, body.stream, "text_completion", loaded.name)

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatRequest) -> Any:
        text = render([m.model_dump() for m in body.messages], True)
        ids = loaded.tokenizer(text, add_special_tokens=False)["input_ids"]
        s = sampling(body, ids, body.max_completion_tokens or body.max_tokens, ["<|im_end|>"] if chatml else [])
        return await _respond(engine, ids, s, body.stream, "chat.completion", loaded.name)

    return app


def _single(prompts: list[str]) -> str:
    if len(prompts) != 1:
        raise APIError(400, "prompt: send one prompt per request (a list of one string, or a string)",
                       param="prompt")
    return prompts[0]


async def _respond(engine: Engine, ids: list[int], s: Sampling, stream: bool, kind: str, model: str) -> Any:
    """Submit to the engine; answer with one JSON body, or stream the text as server-sent events."""
    loop = asyncio.get_running_loop()
    pieces: asyncio.Queue[str | Result] = asyncio.Queue()
    engine.submit(Request(ids, s, on_text=lambda t: loop.call_soon_threadsafe(pieces.put_nowait, t),
                          on_done=lambda r: loop.call_soon_threadsafe(pieces.put_nowait, r)))
    ident = ("chatcmpl-" if kind == "chat.completion" else "cmpl-") + uuid.uuid4().hex[:24]
    created = int(time.time())
    if not stream:
        while not isinstance(result := await pieces.get(), Result):
            pass
        if result.error is not None:
            raise APIError(500, f"generation failed: {result.error}")
        return _body(kind, ident, created, model, result)
    return StreamingResponse(_events(pieces, kind, ident, created, model), media_type="text/event-stream")


def _body(kind: str, ident: str, created: int, model: str, r: Result) -> dict[str, Any]:
    usage = {"prompt_tokens": r.prompt_tokens, "completion_tokens": r.completion_tokens,
             "total_tokens": r.prompt_tokens + r.completion_tokens}
    if kind == "chat.completion":
        choice = {"index": 0, "message": {"role": "assistant", "content": r.text}, "finish_reason": r.finish_reason,
                  "logprobs": None}
    else:
        choice = {"index": 0, "text": r.text, "finish_reason": r.finish_reason, "logprobs": None}
    return {"id": ident, "object": kind, "created": created, "model": model, "choices": [choice], "usage": usage}


async def _events(pieces: asyncio.Queue, kind: str, ident: str, created: int, model: str) -> AsyncIterator[str]:
    chat = kind == "chat.completion"
    obj = "chat.completion.chunk" if chat else "text_completion"

    def chunk(text: str | None, finish: str | None, role: bool = False) -> str:
        if chat:
            delta: dict[str, Any] = {"role": "assistant"} if role else {}
            if text is not None:
                delta["content"] = text
            choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        else:
            choice = {"index": 0, "text": text or "", "finish_reason": finish, "logprobs": None}
        body = {"id": ident, "object": obj, "created": created, "model": model, "choices": [choice]}
        return f"data: {json.dumps(body)}\n\n"

    if chat:
        yield chunk(None, None, role=True)
    while True:
        item = await pieces.get()
        if isinstance(item, Result):
            if item.error is not None:
                yield f"data: {json.dumps({'error': {'message': item.error, 'type': 'server_error'}})}\n\n"
            else:
                yield chunk(None if chat else "", item.finish_reason)
            yield "data: [DONE]\n\n"
            return
        yield chunk(item, None)


def serve(loaded: Loaded, *, host: str = "127.0.0.1", port: int = 8000, max_batch: int = 32) -> None:
    """Run the server until interrupted."""
    import uvicorn

    engine = Engine(loaded.model, loaded.tokenizer, max_batch=max_batch)
    app = create_app(loaded, engine)
    print(f"serving {loaded.name} on http://{host}:{port}/v1 (OpenAI-compatible; batches up to {max_batch} "
          "requests)", flush=True)
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        engine.close()
