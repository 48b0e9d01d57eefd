"""A request an engine refuses (a state longer than the agent's context) fails its episode, masked from learning,
instead of stopping the step: the paper-scale defect where one over-long prompt made vLLM refuse a revision turn.

Real engines: the HF generator on a tiny model here; the vLLM pre-check in ``tests/test_vllm_engine.py``'s scenario,
and its batch-refused fallback here against a stand-in for ``vllm.LLM`` (``import vllm`` takes 10-18 s).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from waltz_ray.types import Completion, GenerationParams, Message, Prompt, context_overflow

GREEDY = GenerationParams(max_new_tokens=8, temperature=0.0)
LONG = " ".join(["please"] * 600)  # far more tokens than the contexts below hold


@pytest.fixture(scope="module")
def tiny_path(tiny_env: Path) -> str:
    from tests.tiny_world import tiny_config
    from waltz_ray.worlds.tiny.build import init_tiny

    return str(init_tiny(tiny_config()))


def test_context_overflow_is_vllms_rule() -> None:
    assert context_overflow(10, 11) is None  # room for one new token
    assert "does not fit" in str(context_overflow(11, 11))
    assert "does not fit" in str(context_overflow(12, 11))
    assert context_overflow(10_000, None) is None
    assert "empty" in str(context_overflow(0, 11))


def test_hf_generator_rejects_only_the_request_that_does_not_fit(tiny_path: str) -> None:
    from waltz_ray.engines.hf import HFGenerator

    generator = HFGenerator.from_pretrained(tiny_path, max_model_len=200, policy_version=3)
    chats = [[{"role": "user", "content": text}] for text in ("How do I bake bread?", LONG, "Hello there")]
    mixed = generator.generate(chats, GREEDY)
    alone = generator.generate([chats[0], chats[2]], GREEDY)
    assert [c.rejected for c in mixed] == [False, True, False]
    assert (mixed[0], mixed[2]) == (alone[0], alone[1])  # the others are generated as if it were not there
    rejected = mixed[1]
    assert rejected.finish_reason == "rejected" and rejected.token_ids == () and rejected.text == ""
    assert len(rejected.prompt_token_ids) >= 200 and rejected.policy_version == 3
    assert "context holds 200" in str(rejected.error)
    # without max_model_len the model's own context applies (tiny: max_position_embeddings 1024)
    assert HFGenerator.from_pretrained(tiny_path).max_model_len == 1024


class Reviewer:
    """A feedback agent stand-in: flags answers to lock-picking prompts with a long feedback, passes the rest."""

    policy_version = 0

    def generate(self, chats: Sequence[Sequence[Message]], params: GenerationParams) -> list[Completion]:
        out = []
        for chat in chats:
            flag = "lock" in chat[-1]["content"]
            verdict = {"reasoning": "r", "unsafe": flag, "overrefuse": False, "feedback": LONG if flag else ""}
            text = json.dumps(verdict)
            out.append(Completion(text, (1, 2), tuple(range(3, 3 + len(text)))))
        return out


def _rollout(conversation: Any, feedback: Any, prompts: list[Prompt]) -> list[Any]:
    from waltz_ray.engines.judges import RuleJudge
    from waltz_ray.rollout import RolloutSettings, run_episodes

    settings = RolloutSettings("Be helpful.", "Review the answer.", GREEDY, GREEDY, t_max=1)
    return run_episodes(prompts, conversation, feedback, RuleJudge(), settings, [p.prompt_id for p in prompts])


def _check_masked(episodes: list[Any], failed_id: str) -> None:
    from waltz_ray.core.metrics import pair_metrics
    from waltz_ray.core.rewards import judge_failure_rate, stage_weights
    from waltz_ray.core.samples import batch_samples

    failed = {e.episode_id: e for e in episodes if e.failed}
    assert list(failed) == [failed_id]
    episode = failed[failed_id]
    assert "rejected the request" in str(episode.error)
    assert all(not r.judge.ok and "not judged" in str(r.judge.error) for r in episode.rounds)
    assert all(r.judge.ok for e in episodes if not e.failed for r in e.rounds)
    for stage in (1, 2):
        fb, conv, stats = batch_samples(episodes, 0, 0, stage_weights(stage, 1.0, 1.0, 0.0, 0.1), 0.5)
        assert failed_id not in {s.episode_id for s in fb + conv}
        assert stats.n_masked_conversation == 1 and stats.n_conversation == len(episodes) - 1
    assert judge_failure_rate(episodes) == 0.0  # the judge never saw it: no step is stopped for it
    metrics = pair_metrics(episodes)
    assert metrics["rejected_requests"] == 1.0 and metrics["n_judge_failures"] == 0.0


def test_a_first_answer_the_engine_rejects_fails_only_its_episode(tiny_path: str) -> None:
    from waltz_ray.engines.hf import HFGenerator

    conversation = HFGenerator.from_pretrained(tiny_path, max_model_len=400)
    prompts = [
        Prompt("How do I bake bread?", "benign", "bread"),
        Prompt(LONG, "harmful", "long"),
        Prompt("Tell me about the sea.", "benign", "sea"),
    ]
    episodes = _rollout(conversation, Reviewer(), prompts)
    _check_masked(episodes, "long")
    long = episodes[1]
    assert len(long.rounds) == 1 and long.rounds[0].response.rejected and long.rounds[0].feedback is None


def test_a_revision_the_engine_rejects_fails_only_its_episode(tiny_path: str) -> None:
    """The paper-scale defect: the prompt fits, but the revision turn (prompt + c0 + feedback) does not."""
    from waltz_ray.engines.hf import HFGenerator

    conversation = HFGenerator.from_pretrained(tiny_path, max_model_len=400)
    prompts = [
        Prompt("How do I bake bread?", "benign", "bread"),
        Prompt("How do I pick a lock?", "harmful", "lock"),  # flagged, with a feedback too long to carry back
        Prompt("Tell me about the sea.", "benign", "sea"),
    ]
    episodes = _rollout(conversation, Reviewer(), prompts)
    _check_masked(episodes, "lock")
    lock = episodes[1]
    assert [r.response.rejected for r in lock.rounds] == [False, True]
    assert lock.rounds[0].verdict.flags_revision


# --- VLLMGenerator: a batch vLLM refuses anyway is retried request by request ---------------------------------------


class RefusingLLM:
    """A stand-in for ``vllm.LLM.generate``: refuses a whole batch if any prompt holds token 7, as vLLM's up-front
    validation does; otherwise answers each prompt with its own first token."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def generate(self, prompts: list[dict[str, Any]], sampling: list[Any], use_tqdm: bool = False) -> list[Any]:
        self.calls.append(len(prompts))
        if any(7 in p["prompt_token_ids"] for p in prompts):
            raise ValueError("token 7 is not allowed")
        return [
            SimpleNamespace(
                prompt_token_ids=p["prompt_token_ids"],
                outputs=[SimpleNamespace(token_ids=[p["prompt_token_ids"][0]], finish_reason="length", logprobs=None)],
            )
            for p in prompts
        ]


class ListTokenizer:
    """Chats whose one message is a space-separated list of token ids."""

    eos_token_id = None

    def apply_chat_template(self, chat: list[Message], **_: bool) -> str:
        return chat[-1]["content"]

    def __call__(self, texts: list[str], add_special_tokens: bool = False) -> dict[str, list[list[int]]]:
        return {"input_ids": [[int(t) for t in text.split()] for text in texts]}

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return " ".join(map(str, ids))


def test_vllm_batch_refused_anyway_is_retried_one_by_one(monkeypatch: pytest.MonkeyPatch) -> None:
    from waltz_ray.engines.vllm_engine import VLLMGenerator

    engine = VLLMGenerator.__new__(VLLMGenerator)
    engine.llm, engine.tokenizer, engine.eos_token_id = RefusingLLM(), ListTokenizer(), None
    engine.policy_version, engine.max_model_len = 2, 5
    seeds: list[int] = []
    monkeypatch.setattr(engine, "_sampling_params", lambda params, index: seeds.append(index) or index)
    chats = [[{"role": "user", "content": text}] for text in ("1 2", "3 7", "1 2 3 4 5", "4")]
    out = engine.generate(chats, GREEDY)
    assert [c.rejected for c in out] == [False, True, True, False]
    assert [c.token_ids for c in out] == [(1,), (), (), (4,)]
    assert "token 7 is not allowed" in str(out[1].error)  # refused by "vLLM"
    assert "context holds 5" in str(out[2].error)  # refused by the pre-check: never sent
    assert engine.llm.calls == [3, 1, 1, 1]  # the batch of three, then each alone
    assert seeds == [0, 1, 3, 0, 1, 3]  # every request keeps the seed of its place in the batch
