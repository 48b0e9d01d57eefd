"""Client-side proxies with the in-process interfaces (Generator, Judge, learner), so the step code is shared.

Every remote wait has a deadline and an error that names the pool and the actor; a dead actor fails fast.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray

from waltz_ray.engines.judges.batch import check_batch_sizes
from waltz_ray.types import Completion, GenerationParams, JudgeVerdict, Message, PromptLabel


class RemoteCallError(RuntimeError):
    """A remote call failed (the actor died or raised); the message names the pool, the actor and the cause."""


class RemoteTimeoutError(RemoteCallError, TimeoutError):
    """A remote call did not answer within its timeout; the message names what was still pending."""


class StaleWeightsError(RuntimeError):
    """A generator actor was asked for a policy version newer than the weights it holds (it was restarted)."""


class GeneratorFault(RemoteCallError):
    """A generation actor died (Ray restarts it) or holds stale weights: the rollout that hit it produced nothing
    and can be generated again once the pool is refreshed (``RolloutProducer`` does). ``pool`` names the pool."""

    def __init__(self, message: str, pool: str) -> None:
        super().__init__(message)
        self.pool = pool

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:  # Ray pickles it across processes
        return (type(self), (str(self), self.pool))


def generator_fault(exc: BaseException | None) -> bool:
    """An actor that died, is restarting, or refused stale work; not a timeout or a bug in the engine."""
    from ray.exceptions import ActorDiedError, ActorUnavailableError

    return isinstance(exc, (ActorDiedError, ActorUnavailableError, StaleWeightsError))


@dataclass
class Pool:
    """The actors of one pool, by name (``conversation_generation``, ``judge``, ``feedback_learner``, ...)."""

    name: str
    actors: list[Any]

    def label(self, index: int) -> str:
        return f"{self.name}[{index}]"


def wait_all(refs: Sequence[Any], labels: Sequence[str], timeout_s: float, what: str) -> list[Any]:
    """Values of ``refs`` in order; raises on the first failure or at the deadline (never hangs, no get-in-a-loop
    on unready refs: ``ray.wait`` returns each ref as soon as it is done, so a dead actor is reported at once)."""
    deadline = time.monotonic() + timeout_s
    pending = dict(zip(refs, labels, strict=True))
    values: dict[Any, Any] = {}
    while pending:
        remaining = deadline - time.monotonic()
        ready = ray.wait(list(pending), num_returns=1, timeout=max(0.0, remaining))[0] if remaining > 0 else []
        if not ready:
            names = ", ".join(sorted(pending.values()))
            raise RemoteTimeoutError(f"{what}: no answer from {names} within {timeout_s:g} s")
        for ref in ready:
            label = pending.pop(ref)
            try:
                values[ref] = ray.get(ref, timeout=max(1.0, deadline - time.monotonic()))
            except Exception as exc:
                raise RemoteCallError(f"{what}: {label} failed: {type(exc).__name__}: {_cause(exc)}") from exc
    return [values[ref] for ref in refs]


def wait_ready(refs: Sequence[Any], labels: Sequence[str], timeout_s: float, what: str) -> None:
    """Wait until every ref is done without fetching the values (large state dicts stay where they are)."""
    pending = ray.wait(list(refs), num_returns=len(refs), timeout=timeout_s, fetch_local=False)[1]
    if pending:
        names = ", ".join(sorted(label for ref, label in zip(refs, labels, strict=True) if ref in pending))
        raise RemoteTimeoutError(f"{what}: no answer from {names} within {timeout_s:g} s")


def _cause(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[-1] if text else repr(exc)


def shards(n: int, parts: int) -> list[tuple[int, int]]:
    """Contiguous, near-equal ``[start, end)`` ranges covering ``range(n)``; empty ranges are left out."""
    parts = max(1, min(parts, n))
    base, extra = divmod(n, parts)
    out, start = [], 0
    for i in range(parts):
        end = start + base + (1 if i < extra else 0)
        if end > start:
            out.append((start, end))
        start = end
    return out


class RemoteGenerator:
    """The Generator interface over a pool of generator actors: a batch is split into contiguous shards.

    Shard ``[start, end)`` is seeded with ``seed + start``, so a vLLM pool (per-request seeds ``seed + i``) samples
    exactly what one engine would; an HF pool equals the in-process generator when it has one actor.
    ``policy_version`` is the version every actor holds (set by the weight sync); completions carry their own.
    """

    def __init__(self, pool: Pool, timeout_s: float, policy_version: int = 0) -> None:
        self.pool = pool
        self.timeout_s = timeout_s
        self.policy_version = policy_version
        self.min_version = 0  # actors holding older weights refuse the work (StaleWeightsError)

    def generate(self, chats: Sequence[Sequence[Message]], params: GenerationParams) -> list[Completion]:
        if not chats:
            return []
        parts = shards(len(chats), len(self.pool.actors))
        refs = [
            self.pool.actors[i].generate.remote(
                [list(c) for c in chats[start:end]], params.offset(start), self.min_version
            )
            for i, (start, end) in enumerate(parts)
        ]
        labels = [self.pool.label(i) for i in range(len(parts))]
        try:
            results = wait_all(refs, labels, self.timeout_s, f"generation pool {self.pool.name!r}")
        except RemoteCallError as exc:
            if generator_fault(exc.__cause__):
                raise GeneratorFault(str(exc), self.pool.name) from exc
            raise
        return [completion for part in results for completion in part]


class RemoteJudge:
    """The Judge interface over a pool of judge actors (a batch is split into contiguous shards)."""

    def __init__(self, pool: Pool, timeout_s: float) -> None:
        self.pool = pool
        self.timeout_s = timeout_s

    def judge(
        self,
        prompts: Sequence[str],
        responses: Sequence[str],
        labels: Sequence[PromptLabel | None] | None = None,
    ) -> list[JudgeVerdict]:
        check_batch_sizes(prompts, responses, labels)  # before sharding, so a mismatch is named, not mis-split
        if not prompts:
            return []
        parts = shards(len(prompts), len(self.pool.actors))
        refs = [
            self.pool.actors[i].judge.remote(
                list(prompts[s:e]), list(responses[s:e]), None if labels is None else list(labels[s:e])
            )
            for i, (s, e) in enumerate(parts)
        ]
        labels_ = [self.pool.label(i) for i in range(len(parts))]
        results = wait_all(refs, labels_, self.timeout_s, f"judge pool {self.pool.name!r}")
        return [verdict for part in results for verdict in part]


class RemoteReference:
    """The ReferenceModel interface over a pool of reference actors (contiguous shards, results in order)."""

    def __init__(self, pool: Pool, timeout_s: float) -> None:
        self.pool = pool
        self.timeout_s = timeout_s

    def score(self, completions: Sequence[Completion]) -> list[Completion]:
        if not completions:
            return []
        parts = shards(len(completions), len(self.pool.actors))
        refs = [self.pool.actors[i].score.remote(list(completions[s:e])) for i, (s, e) in enumerate(parts)]
        labels = [self.pool.label(i) for i in range(len(parts))]
        results = wait_all(refs, labels, self.timeout_s, f"reference pool {self.pool.name!r}")
        return [c for part in results for c in part]


class RemoteLearnerGroup:
    """One agent's learner group (a TorchLearner actor, or the ranks of a DeepSpeed group) as one ``Learner``
    (``waltz_ray.engines.base``); the actors are ``LearnerHost``s.

    Every call goes to all ranks (DeepSpeed's calls are collective) with arguments put into the object store once;
    rank 0's answer is returned. ``policy_version`` mirrors the ranks' version (one increment per update).
    """

    def __init__(self, pool: Pool, timeout_s: float, policy_version: int = 0) -> None:
        self.pool = pool
        self.timeout_s = timeout_s
        self.policy_version = policy_version

    def _call(self, method: str, *args: Any) -> list[Any]:
        shared = [ray.put(a) for a in args] if len(self.pool.actors) > 1 else list(args)
        refs = [getattr(actor, method).remote(*shared) for actor in self.pool.actors]
        labels = [self.pool.label(i) for i in range(len(refs))]
        return wait_all(refs, labels, self.timeout_s, f"learner group {self.pool.name!r} ({method})")

    def logprobs(self, batch: Any, with_reference: bool = True, with_policy: bool = True) -> tuple[Any, Any]:
        return self._call("logprobs", batch, with_reference, with_policy)[0]  # type: ignore[no-any-return]

    def update(self, batch: Any, old_logp: Any, ref_logp: Any, advantages: Any, off_policy: Any = None) -> Any:
        """Every rank gets the whole batch and the whole tensors (``off_policy`` too); a DeepSpeed rank takes its
        own rows of each."""
        stats = self._call("update", batch, old_logp, ref_logp, advantages, off_policy)[0]
        self.policy_version += 1
        return stats

    def state_dict_ref(self) -> Any:
        """An object ref to rank 0's full state dict; the dict itself never comes to the driver."""
        refs = [actor.state_dict_for_sync.remote() for actor in self.pool.actors]
        labels = [self.pool.label(i) for i in range(len(refs))]
        what = f"learner group {self.pool.name!r} (state_dict_for_sync)"
        wait_all(refs[1:], labels[1:], self.timeout_s, what)  # other ranks return {}: cheap to check for errors
        wait_ready(refs[:1], labels[:1], self.timeout_s, what)
        return refs[0]

    def save_pretrained(self, path: str | Path) -> None:
        """Rank 0 writes the policy in Hugging Face format (collective under ZeRO-3)."""
        self._call("save_pretrained", str(path))

    def save_state(self, path: str | Path) -> None:
        """A resume point: the policy in Hugging Face format plus optimizer state and policy version (collective)."""
        self._call("save_state", str(path))

    def load_state(self, path: str | Path) -> None:
        """Restore a DeepSpeed group's ``save_state`` (the torch backend restores when its actor is built)."""
        self._call("load_state", str(path))
