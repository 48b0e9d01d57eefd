"""The HTTP judge: the LLM judge's prompt and parser, sent to an OpenAI-compatible /chat/completions endpoint.

Bounded concurrency, timeouts, and retries with exponential backoff; every failure becomes a failure verdict.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from waltz_ray.engines.judges.batch import check_batch_sizes
from waltz_ray.engines.judges.llm import DEFAULT_JUDGE_PROMPT, build_judge_chat, check_template, parse_judge_output
from waltz_ray.types import JudgeVerdict, Message, PromptLabel

if TYPE_CHECKING:
    import httpx


class _CallFailed(Exception):
    """One item's request failed for good; the message becomes the failure verdict's reason."""


class HTTPJudge:
    """Judges each (prompt, response) with one chat completion at temperature 0.

    At most ``concurrency`` requests are in flight (one worker thread each). Connection errors, timeouts, 429 and
    5xx are retried up to ``max_retries`` times with backoff ``backoff_s * 2**k``; other 4xx are not retried.
    The API key comes from ``api_key_file`` if given, else the ``api_key_env`` variable; it is never shown.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str | None = "WALTZ_JUDGE_API_KEY",
        api_key_file: str | Path | None = None,
        timeout_s: float = 30.0,
        max_retries: int = 2,
        concurrency: int = 8,
        template: str = DEFAULT_JUDGE_PROMPT,
        use_labels: bool = False,
        max_tokens: int = 256,
        backoff_s: float = 0.5,
    ) -> None:
        if concurrency < 1 or max_retries < 0 or timeout_s <= 0 or backoff_s < 0:
            raise ValueError("need concurrency >= 1, max_retries >= 0, timeout_s > 0, backoff_s >= 0")
        check_template(template)
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.concurrency = concurrency
        self.template = template
        self.use_labels = use_labels
        self.max_tokens = max_tokens
        self.backoff_s = backoff_s
        self._api_key = _read_api_key(api_key_env, api_key_file)

    def __repr__(self) -> str:
        key = "<set>" if self._api_key else None
        return (
            f"HTTPJudge(url={self.url!r}, model={self.model!r}, api_key={key}, "
            f"concurrency={self.concurrency}, max_retries={self.max_retries}, timeout_s={self.timeout_s})"
        )

    def judge(
        self,
        prompts: Sequence[str],
        responses: Sequence[str],
        labels: Sequence[PromptLabel | None] | None = None,
    ) -> list[JudgeVerdict]:
        check_batch_sizes(prompts, responses, labels)
        row_labels = labels if labels is not None else [None] * len(prompts)
        chats = [
            build_judge_chat(p, r, label, self.template, self.use_labels)
            for p, r, label in zip(prompts, responses, row_labels, strict=True)
        ]
        if not chats:
            return []
        import httpx

        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        with (
            httpx.Client(timeout=self.timeout_s, limits=limits, headers=self._headers()) as client,
            ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="http-judge") as pool,
        ):
            return list(pool.map(lambda chat: self._judge_one(client, chat), chats))

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}

    def _judge_one(self, client: httpx.Client, chat: list[Message]) -> JudgeVerdict:
        try:
            return parse_judge_output(self._complete(client, chat))
        except _CallFailed as exc:
            return JudgeVerdict.failure(str(exc))
        except Exception as exc:  # anything unforeseen masks this item instead of failing the whole batch
            return JudgeVerdict.failure(f"judge request failed: {type(exc).__name__}: {exc}")

    def _complete(self, client: httpx.Client, chat: list[Message]) -> str:
        """The completion text for one chat, retrying transient failures; raises _CallFailed when out of tries."""
        import httpx

        payload = {"model": self.model, "messages": chat, "temperature": 0, "max_tokens": self.max_tokens}
        last = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                response = client.post(self.url, json=payload)
            except httpx.TransportError as exc:  # connection refused/reset and timeouts are worth another try
                last = f"{type(exc).__name__}: {exc}"
                continue
            if response.status_code == 429 or response.status_code >= 500:
                last = f"HTTP {response.status_code}"
                continue
            if response.status_code >= 400:
                raise _CallFailed(f"judge endpoint returned HTTP {response.status_code} (not retried)")
            return _completion_text(response)
        raise _CallFailed(f"judge endpoint failed after {self.max_retries + 1} attempts: {last}")


def _completion_text(response: httpx.Response) -> str:
    """``choices[0].message.content`` of an OpenAI-shaped body; _CallFailed when the body is not that shape."""
    try:
        body: Any = response.json()
        content = body["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise _CallFailed(f"malformed judge response body: {type(exc).__name__}") from exc
    if not isinstance(content, str):
        raise _CallFailed("malformed judge response body: message content is not a string")
    return content


def _read_api_key(env_var: str | None, key_file: str | Path | None) -> str | None:
    """The key from ``key_file`` when given (a missing file is a config error), else from ``env_var``."""
    if key_file is not None:
        key = Path(key_file).read_text(encoding="utf-8").strip()
    else:
        key = os.environ.get(env_var, "").strip() if env_var else ""
    return key or None
