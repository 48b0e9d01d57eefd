"""The HTTP ingress: OpenAI-compatible routes, API keys, request checks, and the protocol loop over the two agents.

It holds no model: each request's turns go to the conversation and feedback deployments through deployment handles.
Every failure is answered in OpenAI's error shape with a 4xx/5xx status; nothing a client sends can make it a 500.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from ray import serve
from ray.exceptions import RayActorError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, ReplicaUnavailableError
from starlette.exceptions import HTTPException as StarletteHTTPException

from waltz_ray.rollout import RolloutSettings
from waltz_ray.serve import openai_api, pipeline
from waltz_ray.serve.agent import AgentReply
from waltz_ray.serve.auth import KeyChecker
from waltz_ray.serve.validation import ApiError, Limits, parse_chat_request, parse_json
from waltz_ray.types import Completion, GenerationParams, Message

log = logging.getLogger(__name__)
HEALTH_TIMEOUT_S = 10.0
MAX_CONTENT_LENGTH_DIGITS = 15

api = FastAPI(title="waltz-ray", docs_url=None, redoc_url=None, openapi_url=None)


@dataclass(frozen=True)
class IngressSpec:
    """Everything the ingress replicas need, computed by the driver (keys arrive as digests only)."""

    limits: Limits
    settings: RolloutSettings
    key_digests: tuple[bytes, ...]
    hide_feedback: bool
    request_timeout_s: float
    retry_after_s: float
    conversation_app: str
    feedback_app: str


def error_response(error: ApiError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


def error_for(exc: BaseException, retry_after_s: float) -> ApiError:
    """What a failure while answering becomes: overload and dead replicas are 503s, a timeout 504, a bug 500."""
    if isinstance(exc, ApiError):
        return exc
    retry = {"Retry-After": str(max(1, round(retry_after_s)))}
    if isinstance(exc, BackPressureError):
        return ApiError(503, "the server is at capacity; retry later", kind="overloaded", headers=retry)
    if isinstance(exc, (DeploymentUnavailableError, ReplicaUnavailableError, RayActorError)):
        return ApiError(503, "an agent is unavailable; retry later", kind="unavailable", headers=retry)
    if isinstance(exc, TimeoutError):
        return ApiError(504, "the request took longer than the server's time limit", kind="timeout")
    return ApiError(500, "internal error", kind="server_error")


@api.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """Unknown paths and wrong methods in the same error shape as everything else."""
    return error_response(ApiError(exc.status_code, str(exc.detail), headers=exc.headers))


def _caller(handle: Any) -> pipeline.AgentCall:
    async def call(chat: list[Message], params: GenerationParams) -> Completion:
        reply: AgentReply = await handle.generate.remote(chat, params)
        if reply.completion is None:
            message = reply.error or "the agent could not answer"
            raise ApiError(400, message, param="messages", code="context_length_exceeded")
        return reply.completion

    return call


class WaltzIngress:
    """Routes of the OpenAI-compatible API (``serve.ingress(api)`` is applied where the apps are wired)."""

    def __init__(self, spec: IngressSpec) -> None:
        self.spec = spec
        self.keys = KeyChecker(spec.key_digests)
        self.conversation = serve.get_deployment_handle("conversation", app_name=spec.conversation_app)
        self.feedback = serve.get_deployment_handle("feedback", app_name=spec.feedback_app)
        self.created = int(time.time())

    def _authorize(self, request: Request) -> None:
        if not self.keys.allows(request.headers.get("authorization")):
            raise ApiError(401, "unauthorized", kind="authentication_error", headers={"WWW-Authenticate": "Bearer"})

    async def _read_body(self, request: Request) -> bytes:
        limit = self.spec.limits.max_body_bytes
        too_large = ApiError(413, f"the request body is larger than {limit} bytes", code="body_too_large")
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise ApiError(400, "the Content-Length header is not a number")
            if len(declared) > MAX_CONTENT_LENGTH_DIGITS or int(declared) > limit:
                raise too_large
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
        return b"".join(chunks)

    @api.get("/health")
    async def health(self) -> JSONResponse:
        """Unauthenticated liveness for load balancers: both agents answer a ping within the health timeout."""
        pings = asyncio.gather(self.conversation.ping.remote(), self.feedback.ping.remote())
        try:
            agents = await asyncio.wait_for(pings, HEALTH_TIMEOUT_S)
        except Exception as exc:  # any failure means "not ready"; the reason goes to the log only
            log.warning("health check failed: %s", type(exc).__name__)
            return JSONResponse({"status": "unavailable"}, status_code=503)
        return JSONResponse({"status": "ok", "model": self.spec.limits.model_name, "agents": agents})

    @api.get("/v1/models")
    async def models(self, request: Request) -> JSONResponse:
        try:
            self._authorize(request)
        except ApiError as exc:
            return error_response(exc)
        return JSONResponse(openai_api.models_body(self.spec.limits.model_name, self.created))

    @api.get("/v1/models/{model_id:path}")
    async def model(self, model_id: str, request: Request) -> JSONResponse:
        try:
            self._authorize(request)
            if model_id != self.spec.limits.model_name:
                raise ApiError(404, "model not found", param="model", code="model_not_found")
        except ApiError as exc:
            return error_response(exc)
        return JSONResponse(openai_api.model_card(model_id, self.created))

    @api.post("/v1/chat/completions")
    async def chat_completions(self, request: Request) -> Response:
        request_id = f"chatcmpl-{uuid.uuid4().hex}"
        try:
            self._authorize(request)
            chat = parse_chat_request(parse_json(await self._read_body(request)), self.spec.limits)
            served = await asyncio.wait_for(
                pipeline.answer(chat, self.spec.settings, _caller(self.conversation), _caller(self.feedback)),
                self.spec.request_timeout_s,
            )
        except Exception as exc:
            error = error_for(exc, self.spec.retry_after_s)
            if error.status >= 500:
                log.log(logging.ERROR if error.status == 500 else logging.WARNING, "%s: %r", request_id, exc)
            return error_response(error)
        waltz = pipeline.waltz_object(served, self.spec.hide_feedback)
        model = self.spec.limits.model_name
        if chat.stream:
            events = openai_api.stream_events(request_id, self.created, model, served, waltz, chat.include_usage)
            return StreamingResponse(
                iter(events), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
            )
        return JSONResponse(openai_api.completion_body(request_id, int(time.time()), model, served, waltz))
