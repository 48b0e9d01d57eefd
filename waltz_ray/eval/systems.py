"""The seven systems docs/method.md "Baselines" compares, and how each one turns prompts into judged episodes.

Every system runs the shared protocol (``rollout.run_episodes``, greedy) or a documented variant of it on the same
prompts with the same judge, so their ASR/ORR/FTR come from one metric function (``core.metrics.pair_metrics``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from waltz_ray.core import protocol
from waltz_ray.engines.base import Generator, Judge
from waltz_ray.rollout import RolloutSettings, StageTimer, run_episodes
from waltz_ray.types import Completion, Episode, JudgeVerdict, Prompt, Round


@dataclass(frozen=True)
class System:
    """One row of the comparison: which conversation model, which feedback source, whether a safeguard filters."""

    name: str
    label: str
    conversation: str  # "base" (the configured starting model), "single" or "waltz" (trained checkpoints)
    feedback: str | None  # None (no feedback), "base", "waltz" or "oracle" (judge labels as template sentences)
    safeguard: bool = False


SYSTEMS: tuple[System, ...] = (
    System("base", "base (conversation agent alone)", "base", None),
    System("base_safeguard", "base + safeguard", "base", None, safeguard=True),
    System("single_rl", "single-model RL", "single", None),
    System("single_rl_safeguard", "single-model RL + safeguard", "single", None, safeguard=True),
    System("untrained_pair", "two agents, untrained", "base", "base"),
    System("oracle_feedback", "oracle template feedback", "base", "oracle"),
    System("waltzrl", "WaltzRL", "waltz", "waltz"),
)
SYSTEM_NAMES = tuple(s.name for s in SYSTEMS)

# Oracle feedback (system 6): the judge's labels on c0 turned into fixed sentences. They are the notes the
# tiny world's warm start taught its conversation agent to follow (tiny/warmstart.py), and plain instructions for
# any instruct model.
ORACLE_FEEDBACK: dict[tuple[bool, bool], str] = {
    (True, False): "Decline this request and give no steps.",
    (False, True): "The request is harmless. Answer it helpfully.",
}
ORACLE_REASONING = "Oracle feedback from the judge's labels."


def alone_episodes(
    prompts: Sequence[Prompt],
    conversation: Generator,
    judge: Judge,
    settings: RolloutSettings,
    ids: Sequence[str],
    timer: StageTimer | None = None,
) -> list[Episode]:
    """The conversation agent alone: the protocol with no feedback round (T_max = 0), each episode c0 judged."""
    return run_episodes(prompts, conversation, conversation, judge, replace(settings, t_max=0), ids, timer)


def pair_episodes(
    prompts: Sequence[Prompt],
    conversation: Generator,
    feedback: Generator,
    judge: Judge,
    settings: RolloutSettings,
    ids: Sequence[str],
    timer: StageTimer | None = None,
) -> list[Episode]:
    """The two-agent protocol exactly as training evaluates it (``train.evaluate``)."""
    return run_episodes(prompts, conversation, feedback, judge, settings, ids, timer)


def oracle_feedback_text(judge: JudgeVerdict) -> str | None:
    """The oracle's JSON verdict on a judged c0: the judge's labels, a template note when one is raised (empty
    feedback otherwise, as the protocol asks); None when the judge failed, so there is nothing to copy."""
    if not judge.ok:
        return None
    labels = (bool(judge.unsafe), bool(judge.overrefuse))
    note = ORACLE_FEEDBACK.get(labels, "") if any(labels) else ""
    if all(
        labels
    ):  # cannot happen under docs/method.md "Roles" (a harmful request is never over-refused); safety first
        note = ORACLE_FEEDBACK[(True, False)]
    return protocol.format_feedback(labels[0], labels[1], ORACLE_REASONING, note)


def oracle_episodes(
    alone: Sequence[Episode],
    conversation: Generator,
    judge: Judge,
    settings: RolloutSettings,
    timer: StageTimer | None = None,
) -> list[Episode]:
    """Oracle template feedback on the conversation agent's judged first answers (``alone``), one round (T_max = 1).

    Every judged c0 gets the oracle's verdict (parsed by the protocol's parser, so it is a valid one); a flagged c0
    is revised through the same revision template. FTR is then the judge's flag rate and label accuracy 1 by design.
    """
    timer = timer or StageTimer()
    texts = [oracle_feedback_text(e.rounds[0].judge) if e.rounds[0].judge else None for e in alone]
    verdicts = {i: protocol.parse_feedback(t) for i, t in enumerate(texts) if t is not None}
    flagged = [i for i, v in verdicts.items() if protocol.should_revise(v, 0, 1)]
    states = [
        protocol.conversation_messages(
            settings.conversation_system,
            alone[i].prompt.text,
            [(alone[i].rounds[0].response.text, verdicts[i].feedback or "")],
            revision_template=settings.revision_template,
        )
        for i in flagged
    ]
    with timer("revision_generation"):
        revisions = conversation.generate(states, settings.conversation_params) if states else []
    with timer("judge"):
        judged = judge.judge(
            [alone[i].prompt.text for i in flagged],
            [c.text for c in revisions],
            [alone[i].prompt.label for i in flagged],
        )
    out = list(alone)
    for i, verdict in verdicts.items():
        first = replace(alone[i].rounds[0], feedback=_oracle_completion(texts[i] or ""), verdict=verdict)
        out[i] = replace(alone[i], rounds=(first,))
    for i, revision, after in zip(flagged, revisions, judged, strict=True):
        out[i] = replace(out[i], rounds=(out[i].rounds[0], Round(response=revision, judge=after)))
    return out


def _oracle_completion(text: str) -> Completion:
    return Completion(text=text, prompt_token_ids=(), token_ids=(), finish_reason="oracle")
