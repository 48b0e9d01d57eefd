"""The embedded world: repertoire consistent with the judge and parser, warm-start data proportions, and a
real (small) build -> load by path -> generate -> learn round trip."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from waltz_ray.config import build_config
from waltz_ray.core import protocol
from waltz_ray.data.loaders import load_prompts
from waltz_ray.engines.hf import HFGenerator
from waltz_ray.engines.judges import RuleJudge, detect_refusal
from waltz_ray.engines.learner import TorchLearner, behaviour_logprobs, make_batch
from waltz_ray.types import Completion, GenerationParams
from waltz_ray.worlds import resolve_model_path
from waltz_ray.worlds.tiny import warmstart
from waltz_ray.worlds.tiny.build import init_tiny


def test_repertoire_is_judged_as_intended() -> None:
    assert all(detect_refusal(text).refused for text in warmstart.REFUSALS)
    assert not any(detect_refusal(text).refused for text in warmstart.ANSWERS)
    verdicts = RuleJudge().judge(["q"] * 2, [warmstart.REFUSALS[0], warmstart.ANSWERS[0]], ["harmful", "harmful"])
    assert [(v.unsafe, v.overrefuse) for v in verdicts] == [(False, False), (True, False)]


@pytest.mark.parametrize("labels", list(warmstart.FEEDBACK_TEXT))
def test_feedback_repertoire_parses(labels: tuple[bool, bool]) -> None:
    verdict = protocol.parse_feedback(warmstart.feedback_json(*labels, warmstart.reasoning_text("benign", True)))
    assert verdict.ok and (verdict.unsafe, verdict.overrefuse) == labels
    assert verdict.reasoning == "The request is benign. The answer refuses."


def test_warm_start_proportions_are_exact() -> None:
    prompts = load_prompts("builtin:train")[:20]
    examples = warmstart.build_sft_examples(prompts, "conv", "fb", seed=3)
    by_state: dict[tuple[tuple[str, str], ...], Counter[str]] = {}
    for ex in examples:
        key = tuple((m["role"], m["content"]) for m in ex.messages)
        by_state.setdefault(key, Counter())[ex.target] += 1
    for prompt in prompts:
        first = tuple((m["role"], m["content"]) for m in protocol.conversation_messages("conv", prompt.text))
        refusals = sum(n for t, n in by_state[first].items() if t in warmstart.REFUSALS)
        expected = warmstart.FIRST_ANSWER_MIX[prompt.label == "harmful"]
        assert (refusals, sum(by_state[first].values()) - refusals) == expected
        for c0 in (*warmstart.REFUSALS, *warmstart.ANSWERS):
            review = tuple((m["role"], m["content"]) for m in protocol.feedback_messages("fb", prompt.text, c0))
            if review not in by_state:
                continue
            verdicts: Counter[bool] = Counter()
            for target, n in by_state[review].items():
                v = protocol.parse_feedback(target)
                assert v.reasoning == warmstart.reasoning_text(prompt.label, c0 in warmstart.REFUSALS)
                verdicts[v.flags_revision] += n
            warranted = (c0 in warmstart.REFUSALS) == (prompt.label == "benign")
            assert (verdicts[False], verdicts[True]) == warmstart.FLAG_MIX[warranted]


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A deliberately small build (a few SFT steps) in a private cache: exercises the real recipe quickly."""
    import os

    cache = tmp_path_factory.mktemp("cache")
    old = os.environ.get("WALTZ_RAY_CACHE")
    os.environ["WALTZ_RAY_CACHE"] = str(cache)
    try:
        config = build_config({"tiny": {"sft_steps": 3, "hidden_size": 64, "num_layers": 1}})
        path = init_tiny(config)
        assert resolve_model_path("tiny://instruct", config) == str(path)  # cached: same directory, no rebuild
        assert resolve_model_path("/some/checkpoint", config) == "/some/checkpoint"
        return str(path)
    finally:
        if old is None:
            os.environ.pop("WALTZ_RAY_CACHE", None)
        else:
            os.environ["WALTZ_RAY_CACHE"] = old


def test_tiny_checkpoint_loads_by_path_like_any_model(tiny_path: str) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_path)
    tokenizer = AutoTokenizer.from_pretrained(tiny_path)
    assert model.config.model_type == "llama"
    assert 100_000 < sum(p.numel() for p in model.parameters()) < 10_000_000
    text = protocol.render_chat(tokenizer, [{"role": "user", "content": "hi"}])
    assert text == "<|bos|><|user|>hi<|end|><|assistant|>"
    assert tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"]) == text


def test_hf_generator_returns_aligned_tokens_and_logprobs(tiny_path: str) -> None:
    gen = HFGenerator.from_pretrained(tiny_path, policy_version=7)
    chats = [
        protocol.conversation_messages("sys", "How do I kill a Python process?"),
        [{"role": "user", "content": "x"}],
    ]
    out = gen.generate(chats, GenerationParams(max_new_tokens=6, temperature=1.0, seed=1))
    again = gen.generate(chats, GenerationParams(max_new_tokens=6, temperature=1.0, seed=1))
    assert [c.token_ids for c in out] == [c.token_ids for c in again]  # seeded sampling is reproducible
    for c in out:
        assert c.policy_version == 7 and 1 <= len(c.token_ids) <= 6
        assert len(c.logprobs) == len(c.token_ids) and all(lp <= 0 for lp in c.logprobs)
        assert (c.finish_reason == "stop") == (c.token_ids[-1] == gen.tokenizer.eos_token_id)
    greedy = gen.generate(chats, GenerationParams(max_new_tokens=6, temperature=0.0))
    assert all(len(c.logprobs) == len(c.token_ids) for c in greedy)


def test_make_batch_masks_exactly_the_action_tokens() -> None:
    batch = make_batch([Completion("", (5, 6, 7), (8, 9)), Completion("", (5,), (8,))], pad_id=0)
    assert batch.input_ids.tolist() == [[5, 6, 7, 8, 9], [5, 8, 0, 0, 0]]
    # position t scores token t+1: the actions are tokens 3,4 of row 0 and token 1 of row 1
    assert batch.action_mask.tolist() == [[0, 0, 1, 1], [1, 0, 0, 0]]
    assert batch.num_tokens == 3


def test_behaviour_logprobs_align_with_the_action_mask_and_skip_fresh_rows() -> None:
    stale = Completion("", (5, 6, 7), (8, 9), logprobs=(-0.5, -0.25), policy_version=2)
    fresh = Completion("", (5,), (8,), logprobs=(-1.0,), policy_version=3)
    unreported = Completion("", (5,), (8, 9), policy_version=1)  # an engine without log-probs: left uncorrected
    completions = [stale, fresh, unreported]
    batch = make_batch(completions, pad_id=0)
    logp, mask = behaviour_logprobs(completions, batch.input_ids.shape[1], stale_below=3)
    assert mask.tolist() == [[0, 0, 1, 1], [0, 0, 0, 0], [0, 0, 0, 0]]
    assert logp[0].tolist() == [0.0, 0.0, -0.5, -0.25]
    assert ((mask > 0) <= (batch.action_mask > 0)).all()


def test_learner_update_moves_towards_rewarded_actions(tiny_path: str) -> None:
    config = build_config({"learner": {"lr": 1e-2, "micro_batch_size": 2}})
    gen = HFGenerator.from_pretrained(tiny_path)
    ref = HFGenerator.from_pretrained(tiny_path).model
    learner = TorchLearner(gen.model, ref, config.learner, config.algorithm)
    good, bad = (Completion("", (1, 5, 6), (9, 9)), Completion("", (1, 5, 6), (10, 10)))
    batch = make_batch([good, bad, good, bad], gen.tokenizer.pad_token_id)
    before, _ = learner.logprobs(batch)
    advantages = torch.tensor([[1.0], [-1.0], [1.0], [-1.0]]) * batch.action_mask
    stats = learner.update(batch, before, before, advantages)
    after, _ = learner.logprobs(batch)
    gain = ((after - before) * batch.action_mask).sum(dim=1)
    assert learner.policy_version == 1 and not stats.skipped
    assert gain[0] > 0 > gain[1]
