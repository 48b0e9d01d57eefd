"""One batch of WaltzRL episodes (docs/method.md) written against the Generator and Judge interfaces; no ray here.

Stages run in the order of the data flow and are timed under their names: conversation_generation,
feedback_generation, revision_generation, judge, and reference_logprobs when the rollout side scores the sampled
tokens under the reference models (``runtime.reference_on: rollout``).

A request an engine rejects (a state that does not fit the agent's context) comes back as a rejected completion; its
episode ends there as failed (``Episode.error``), is not judged, and all its samples are masked; the rest of the
batch goes on. ``core.metrics.pair_metrics`` counts them (``rejected_requests``: ``rollout/rejected_requests`` in
training).
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

from waltz_ray.core import protocol
from waltz_ray.engines.base import Generator, Judge, ReferenceModel
from waltz_ray.types import (
    ROUND_SEED_SALT,
    AgentName,
    Completion,
    Episode,
    FeedbackVerdict,
    GenerationParams,
    JudgeVerdict,
    Prompt,
    Round,
)


@dataclass
class StageTimer:
    """Accumulates wall time per named stage; ``with timer("judge"): ...``. Thread-safe: stages timed in parallel
    threads (the Ray driver's concurrent learner-group updates) add up under their names."""

    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            with self._lock:
                self.seconds[name] += elapsed


@dataclass(frozen=True)
class RolloutSettings:
    """What the protocol needs beyond the engines: prompts, templates, round cap and sampling settings."""

    conversation_system: str
    feedback_system: str
    conversation_params: GenerationParams
    feedback_params: GenerationParams
    t_max: int = 1
    revision_template: str = protocol.DEFAULT_REVISION_TEMPLATE
    feedback_template: str = protocol.DEFAULT_FEEDBACK_TEMPLATE
    # agents whose completions the reference models score (when there are reference models): stage 1 trains only the
    # feedback agent, so scoring the conversation agent's tokens would be wasted work
    reference_agents: tuple[AgentName, ...] = ("conversation", "feedback")
    # the policy version each agent's generators must hold (the Ray runtime: what the driver last pushed)
    min_versions: Mapping[AgentName, int] = field(default_factory=dict)


@dataclass
class _Draft:
    """An episode under construction: texts so far and its rounds' parts."""

    prompt: Prompt
    responses: list[Completion] = field(default_factory=list)
    feedbacks: list[Completion] = field(default_factory=list)
    verdicts: list[FeedbackVerdict] = field(default_factory=list)
    open: bool = True
    error: str | None = None  # why the episode failed (an engine rejected one of its requests)

    def fail_if_rejected(self, agent: AgentName, completion: Completion) -> None:
        if completion.error is not None:
            self.error = f"the {agent} agent's engine rejected the request: {completion.error}"
            self.open = False

    @property
    def history(self) -> list[tuple[str, str]]:
        return [(c.text, v.feedback or "") for c, v in zip(self.responses, self.verdicts, strict=False)]


def run_episodes(
    prompts: Sequence[Prompt],
    conversation: Generator,
    feedback: Generator,
    judge: Judge,
    settings: RolloutSettings,
    episode_ids: Sequence[str],
    timer: StageTimer | None = None,
    references: Mapping[AgentName, ReferenceModel] | None = None,
) -> list[Episode]:
    """Play the protocol for every prompt: c0, f0, [c1, f1, ...] up to ``t_max`` revisions, then judge every answer;
    with ``references``, every completion of each agent is then scored under that agent's reference model."""
    timer = timer or StageTimer()
    drafts = [_Draft(p) for p in prompts]
    with timer("conversation_generation"):
        first = conversation.generate([_conversation_state(d, settings) for d in drafts], settings.conversation_params)
    for draft, completion in zip(drafts, first, strict=True):
        draft.responses.append(completion)
        draft.fail_if_rejected("conversation", completion)
    for revisions in range(settings.t_max):
        active = [d for d in drafts if d.open]
        if not active:
            break
        with timer("feedback_generation"):
            _review(active, feedback, settings, revisions)
        revising = [d for d in active if d.open]
        if not revising:
            break
        with timer("revision_generation"):
            states = [_conversation_state(d, settings) for d in revising]
            for draft, completion in zip(
                revising,
                conversation.generate(states, settings.conversation_params.offset((revisions + 1) * ROUND_SEED_SALT)),
                strict=True,
            ):
                draft.responses.append(completion)
                draft.fail_if_rejected("conversation", completion)
    with timer("judge"):
        verdicts = _judge_all(drafts, judge)
    scorers = {a: r for a, r in (references or {}).items() if a in settings.reference_agents}
    if scorers:
        with timer("reference_logprobs"):
            _score_references(drafts, scorers)
    return [_episode(eid, d, v) for eid, d, v in zip(episode_ids, drafts, verdicts, strict=True)]


def _conversation_state(draft: _Draft, settings: RolloutSettings) -> list[dict[str, str]]:
    return protocol.conversation_messages(
        settings.conversation_system, draft.prompt.text, draft.history, revision_template=settings.revision_template
    )


def _review(active: list[_Draft], feedback: Generator, settings: RolloutSettings, revisions: int) -> None:
    chats = [
        protocol.feedback_messages(
            settings.feedback_system,
            d.prompt.text,
            d.responses[-1].text,
            d.history,
            template=settings.feedback_template,
        )
        for d in active
    ]
    params = settings.feedback_params.offset(revisions * ROUND_SEED_SALT)  # f0 unsalted, f1 its own stream, ...
    for draft, completion in zip(active, feedback.generate(chats, params), strict=True):
        if completion.error is not None:
            verdict = FeedbackVerdict(ok=False, error=f"not generated: {completion.error}")
        else:
            verdict = protocol.parse_feedback(completion.text)
        draft.feedbacks.append(completion)
        draft.verdicts.append(verdict)
        draft.open = protocol.should_revise(verdict, revisions, settings.t_max)
        draft.fail_if_rejected("feedback", completion)


def _score_references(drafts: list[_Draft], references: Mapping[AgentName, ReferenceModel]) -> None:
    """One scoring call per agent over all of its completions, written back in place (failed episodes: none)."""
    drafts = [d for d in drafts if d.error is None]
    owned: dict[AgentName, list[list[Completion]]] = {
        "conversation": [d.responses for d in drafts],
        "feedback": [d.feedbacks for d in drafts],
    }
    for agent, lists in owned.items():
        flat = [c for parts in lists for c in parts]
        if agent not in references or not flat:
            continue
        scored = references[agent].score(flat)
        if len(scored) != len(flat):
            raise RuntimeError(f"{agent} reference model scored {len(scored)} of {len(flat)} completions")
        it = iter(scored)
        for parts in lists:
            parts[:] = [next(it) for _ in parts]


def _judge_all(drafts: list[_Draft], judge: Judge) -> list[list[JudgeVerdict]]:
    """One batched judge call for every response of every episode that did not fail; a judge crash becomes failure
    verdicts. A failed episode's responses get failure verdicts without a call, so its samples are masked."""
    index = [(i, t) for i, d in enumerate(drafts) if d.error is None for t in range(len(d.responses))]
    prompts = [drafts[i].prompt.text for i, _ in index]
    responses = [drafts[i].responses[t].text for i, t in index]
    labels = [drafts[i].prompt.label for i, _ in index]
    flat: list[JudgeVerdict] = []
    try:
        if index:  # every episode may have failed
            flat = judge.judge(prompts, responses, labels)
        if len(flat) != len(index):
            raise RuntimeError(f"judge returned {len(flat)} verdicts for {len(index)} responses")
    except Exception as exc:
        flat = [JudgeVerdict.failure(f"judge raised {type(exc).__name__}: {exc}")] * len(index)
    out: list[list[JudgeVerdict]] = [
        [] if d.error is None else [JudgeVerdict.failure(f"not judged: {d.error}")] * len(d.responses) for d in drafts
    ]
    for (i, _), verdict in zip(index, flat, strict=True):
        out[i].append(verdict)
    return out


def _episode(episode_id: str, draft: _Draft, verdicts: list[JudgeVerdict]) -> Episode:
    rounds = []
    for t, response in enumerate(draft.responses):
        has_feedback = t < len(draft.feedbacks)
        rounds.append(
            Round(
                response=response,
                feedback=draft.feedbacks[t] if has_feedback else None,
                verdict=draft.verdicts[t] if has_feedback else None,
                judge=verdicts[t],
            )
        )
    return Episode(episode_id=episode_id, prompt=draft.prompt, rounds=tuple(rounds), error=draft.error)


def greedy(params: GenerationParams) -> GenerationParams:
    """The same settings with temperature 0 (evaluation is greedy, docs/method.md "Optimisation")."""
    return replace(params, temperature=0.0, top_p=1.0)


TimerFactory = Callable[[str], object]
