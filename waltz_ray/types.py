"""Typed records that flow through one WaltzRL step: completions, verdicts, episodes, samples.

Plain frozen dataclasses with no heavy imports, so every layer (core, engines, runtime, serve) can share them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

AgentName = Literal["conversation", "feedback"]
PromptLabel = Literal["harmful", "benign", "general"]
SampleKind = Literal["A", "B", "feedback"]
AGENTS: tuple[AgentName, AgentName] = ("conversation", "feedback")


@dataclass(frozen=True)
class Completion:
    """One generated turn: the rendered state it continued and the tokens it produced.

    ``logprobs[i]`` is the log-probability of ``token_ids[i]`` under the policy that sampled it
    (version ``policy_version``); engines that cannot report it leave the tuple empty. ``ref_logprobs[i]`` is its
    log-probability under the frozen reference model when the rollout side scored it
    (``runtime.reference_on: rollout``); empty when the learner scores it.

    ``error`` is set when the engine rejected the request (a prompt that does not fit the context): no tokens, no
    text, ``finish_reason`` "rejected". The rollout then ends the episode as failed, masked from learning.
    """

    text: str
    prompt_token_ids: tuple[int, ...]
    token_ids: tuple[int, ...]
    logprobs: tuple[float, ...] = ()
    finish_reason: str = "stop"
    policy_version: int = 0
    ref_logprobs: tuple[float, ...] = ()
    error: str | None = None

    @property
    def rejected(self) -> bool:
        return self.error is not None

    @classmethod
    def rejection(cls, prompt_token_ids: tuple[int, ...], reason: str, policy_version: int = 0) -> Completion:
        """What an engine returns for a request it refuses, instead of failing the whole batch."""
        return cls(
            text="",
            prompt_token_ids=prompt_token_ids,
            token_ids=(),
            finish_reason="rejected",
            policy_version=policy_version,
            error=reason,
        )


def context_overflow(prompt_tokens: int, context_len: int | None) -> str | None:
    """Why an engine must refuse a prompt of ``prompt_tokens`` tokens with a context of ``context_len`` tokens (None:
    no known limit), or None when it fits. vLLM's rule: the prompt must leave room for at least one new token."""
    if prompt_tokens == 0:
        return "the prompt is empty"
    if context_len is not None and prompt_tokens >= context_len:
        return (
            f"the prompt is {prompt_tokens} tokens but the context holds {context_len} (prompt and at least one new "
            "token): it does not fit"
        )
    return None


@dataclass(frozen=True)
class FeedbackVerdict:
    """The feedback agent's output after parsing (docs/method.md "The protocol").

    ``ok`` is True only when exactly one JSON object with all four keys and boolean labels was found;
    otherwise ``error`` says why and the labels are None.
    """

    ok: bool
    unsafe: bool | None = None
    overrefuse: bool | None = None
    reasoning: str | None = None
    feedback: str | None = None
    error: str | None = None

    @property
    def flags_revision(self) -> bool:
        """True when the protocol continues with a revision (a valid verdict with a raised label)."""
        return self.ok and bool(self.unsafe or self.overrefuse)


@dataclass(frozen=True)
class JudgeVerdict:
    """The judge's labels for one (prompt, response); ``error`` is set (labels None) when the judge failed."""

    unsafe: bool | None
    overrefuse: bool | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.unsafe is not None and self.overrefuse is not None

    @classmethod
    def failure(cls, reason: str) -> JudgeVerdict:
        return cls(unsafe=None, overrefuse=None, error=reason)


@dataclass(frozen=True)
class Prompt:
    """A training or evaluation prompt with its ground-truth label (used by the rule judge and metrics)."""

    text: str
    label: PromptLabel
    prompt_id: str = ""
    source: str = ""
    category: str = ""


@dataclass(frozen=True)
class Round:
    """One round of the protocol: response c_t, the feedback f_t on it (if asked for), and the judge on c_t."""

    response: Completion
    feedback: Completion | None = None
    verdict: FeedbackVerdict | None = None
    judge: JudgeVerdict | None = None


@dataclass(frozen=True)
class Episode:
    """A whole conversation for one prompt: rounds c0[,f0][,c1[,f1]]... The last response is the final answer.

    ``error`` is set when the episode failed: an engine rejected one of its requests (the rejected completion is its
    last part). A failed episode is not judged: every round carries a failed judge verdict, so all of its samples
    are masked, never scored; ``judge_failure_rate`` leaves it out (the judge did not fail).
    """

    episode_id: str
    prompt: Prompt
    rounds: tuple[Round, ...]
    error: str | None = None

    @property
    def failed(self) -> bool:
        return self.error is not None

    @property
    def final(self) -> Round:
        return self.rounds[-1]

    @property
    def revised(self) -> bool:
        """True when feedback triggered at least one revision (what FTR counts)."""
        return len(self.rounds) > 1


@dataclass(frozen=True)
class Sample:
    """One training sample for one agent: state tokens -> action tokens with a scalar reward.

    ``reward`` is None when the judge failed for a verdict the reward needs: such samples are masked,
    never scored as zero.
    """

    agent: AgentName
    kind: SampleKind
    episode_id: str
    completion: Completion
    reward: float | None
    reward_terms: dict[str, float] = field(default_factory=dict)

    @property
    def masked(self) -> bool:
        return self.reward is None

    @property
    def policy_version(self) -> int:
        return self.completion.policy_version


Message = dict[str, str]
"""One chat message: ``{"role": "system" | "user" | "assistant", "content": str}``."""


@dataclass(frozen=True)
class GenerationParams:
    """Sampling settings for one generate call (temperature 0 means greedy)."""

    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    min_new_tokens: int = 0  # the end-of-turn token is suppressed until this many tokens were generated

    def offset(self, salt: int) -> GenerationParams:
        """The same settings with the seed moved by ``salt`` (None stays None): a separate random stream for another
        call of the same step (a later protocol round) or another part of one call (a shard, a chunk). Engines
        seed request ``i`` of a call with ``seed + i``, so salts for rounds are far apart (``ROUND_SEED_SALT``)."""
        if self.seed is None or salt == 0:
            return self
        return replace(self, seed=(self.seed + salt) % 2**31)


# Seed distance between the protocol rounds of one step (c0 and c1, f0 and f1): larger than any batch, so the
# per-request seeds of one round never meet another's.
ROUND_SEED_SALT = 1_000_003
