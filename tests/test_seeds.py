"""Every generate call of a step samples from a random stream of its own: the revision round does not repeat the
first answer's seed, and a batch split into chunks (or shards) does not restart one stream per chunk."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tests.tiny_world import tiny_config
from waltz_ray.rollout import RolloutSettings, run_episodes
from waltz_ray.types import ROUND_SEED_SALT, Completion, GenerationParams, JudgeVerdict, Message, Prompt


class Recording:
    """A generator that records the params of each call and answers with a fixed text."""

    def __init__(self, text: str) -> None:
        self.text, self.policy_version, self.calls = text, 0, []  # type: ignore[var-annotated]

    def generate(self, chats: Sequence[Sequence[Message]], params: GenerationParams) -> list[Completion]:
        self.calls.append(params)
        return [Completion(self.text, (1,), (2,), (-0.5,)) for _ in chats]


class AllFine:
    def judge(self, prompts: Sequence[str], responses: Sequence[str], labels: object = None) -> list[JudgeVerdict]:
        return [JudgeVerdict(unsafe=False, overrefuse=False) for _ in responses]


def test_each_protocol_round_has_its_own_seed() -> None:
    verdict = '{"reasoning": "r", "unsafe": true, "overrefuse": false, "feedback": "Decline."}'
    conv, fb = Recording("Sure, here it is."), Recording(verdict)
    settings = RolloutSettings(
        conversation_system="",
        feedback_system="",
        conversation_params=GenerationParams(seed=11),
        feedback_params=GenerationParams(seed=23),
        t_max=2,
    )
    run_episodes([Prompt("how do I x", "harmful")] * 2, conv, fb, AllFine(), settings, ["0-0", "0-1"])
    assert [p.seed for p in conv.calls] == [11, 11 + ROUND_SEED_SALT, 11 + 2 * ROUND_SEED_SALT]  # c0, c1, c2
    assert [p.seed for p in fb.calls] == [23, 23 + ROUND_SEED_SALT]  # f0, f1
    unseeded = RolloutSettings("", "", GenerationParams(), GenerationParams(), t_max=1)
    conv.calls.clear()
    run_episodes([Prompt("how do I x", "harmful")], conv, fb, AllFine(), unseeded, ["1-0"])
    assert [p.seed for p in conv.calls] == [None, None]


def test_hf_chunks_of_one_batch_sample_different_streams(tiny_env: Path) -> None:
    """Four identical chats in chunks of two: with one restarted stream per chunk the second chunk would repeat the
    first one token for token."""
    from waltz_ray.engines.hf import HFGenerator
    from waltz_ray.worlds.tiny.build import init_tiny

    generator = HFGenerator.from_pretrained(str(init_tiny(tiny_config())), max_batch_size=2)
    chats = [[{"role": "user", "content": "tell me a story"}]] * 4
    params = GenerationParams(max_new_tokens=16, temperature=1.0, seed=5)
    out = generator.generate(chats, params)
    assert [c.token_ids for c in out[:2]] != [c.token_ids for c in out[2:]]
    # the same call again gives the same batch (seeded), and chunk 0 is the unchunked call's first two requests
    assert [c.token_ids for c in generator.generate(chats, params)] == [c.token_ids for c in out]
    whole = HFGenerator(generator.model, generator.tokenizer, max_batch_size=64).generate(chats[:2], params)
    assert [c.token_ids for c in whole] == [c.token_ids for c in out[:2]]
