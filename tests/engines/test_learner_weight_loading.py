"""Weight syncs from the learner load strictly: a state dict whose keys or shapes do not match the generator's model
raises naming them, loads nothing and keeps the policy version (HF engine, and the vLLM engine's check before its
RPC). A tied ``lm_head.weight`` may be left out: it is the embedding matrix."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from waltz_ray.engines.hf import HFGenerator, WeightKeys
from waltz_ray.engines.vllm_engine import VLLMGenerator, weight_keys_of
from waltz_ray.worlds.tiny.model import build_tiny_model, tiny_llama_config

TIED = frozenset({"model.embed_tokens.weight", "lm_head.weight"})


def config(tied: bool = True) -> Any:
    cfg = tiny_llama_config(96, 64, 1, {"bos": 1, "eos": 2, "pad": 0})
    cfg.tie_word_embeddings = tied
    return cfg


def snapshot(model: Any) -> dict[str, torch.Tensor]:
    return {name: t.detach().clone() for name, t in model.state_dict().items()}


def same(model: Any, state: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(t, state[name]) for name, t in model.state_dict().items())


def test_weight_keys_know_the_tied_names_and_a_meta_copy_agrees() -> None:
    model = build_tiny_model(config(), seed=0)
    keys = WeightKeys.of(model)
    assert keys.tied == (TIED,)
    assert keys.expected == set(model.state_dict()) and keys.expected >= TIED
    meta = weight_keys_of(config())
    assert meta is not None and meta.shapes == keys.shapes and meta.tied == keys.tied
    untied = WeightKeys.of(build_tiny_model(config(tied=False), seed=0))
    assert untied.tied == () and untied.expected >= TIED


@pytest.mark.parametrize("drop_head", [False, True])
def test_hf_sync_loads_every_weight_and_a_tied_head_may_be_left_out(drop_head: bool) -> None:
    generator = HFGenerator(build_tiny_model(config(), seed=0), tokenizer=None)
    new = snapshot(build_tiny_model(config(), seed=1))
    state = {k: v for k, v in new.items() if not (drop_head and k == "lm_head.weight")}
    generator.load_state_dict(state, policy_version=4)
    assert generator.policy_version == 4 and same(generator.model, new)


def bad_states(new: dict[str, torch.Tensor]) -> list[tuple[dict[str, torch.Tensor], list[str]]]:
    renamed = {("model.final_norm.weight" if k == "model.norm.weight" else k): v for k, v in new.items()}
    missing = {k: v for k, v in new.items() if k != "model.layers.0.mlp.down_proj.weight"}
    reshaped = dict(new, **{"model.norm.weight": torch.ones(65)})
    no_embedding = {k: v for k, v in new.items() if k not in TIED}
    return [
        (renamed, ["missing 1: model.norm.weight", "unexpected 1: model.final_norm.weight"]),
        (missing, ["missing 1: model.layers.0.mlp.down_proj.weight", "unexpected 0"]),
        (reshaped, ["wrong shape 1: model.norm.weight (65,) != (64,)"]),
        (no_embedding, ["missing 2: lm_head.weight, model.embed_tokens.weight"]),  # neither name of the tied pair
        ({}, [f"missing {len(new)}: lm_head.weight"]),
    ]


def test_hf_sync_with_a_mismatched_state_dict_raises_loads_nothing_and_keeps_the_version() -> None:
    generator = HFGenerator(build_tiny_model(config(), seed=0), tokenizer=None, policy_version=3)
    before = snapshot(generator.model)
    for state, parts in bad_states(snapshot(build_tiny_model(config(), seed=1))):
        with pytest.raises(ValueError, match="weight sync to policy version 4") as info:
            generator.load_state_dict(state, policy_version=4)
        for part in parts:
            assert part in str(info.value)
        assert "nothing was loaded" in str(info.value)
        assert generator.policy_version == 3 and same(generator.model, before)


def test_an_untied_head_must_arrive() -> None:
    generator = HFGenerator(build_tiny_model(config(tied=False), seed=0), tokenizer=None)
    state = {k: v for k, v in snapshot(build_tiny_model(config(tied=False), seed=1)).items() if k != "lm_head.weight"}
    with pytest.raises(ValueError, match=r"missing 1: lm_head\.weight"):
        generator.load_state_dict(state, policy_version=1)
    assert generator.policy_version == 0


class FakeLLM:
    """Stands in for ``vllm.LLM``: records the weight file each RPC would load."""

    def __init__(self) -> None:
        self.loaded: list[set[str]] = []

    def collective_rpc(self, method: str, args: tuple[Any, ...]) -> list[int]:
        from safetensors import safe_open

        assert method == "load_weights_from_file"
        with safe_open(args[0], framework="pt") as handle:
            self.loaded.append(set(handle.keys()))
        return [len(self.loaded[-1])]

    def reset_prefix_cache(self) -> None:
        pass


def fake_vllm_generator() -> tuple[VLLMGenerator, FakeLLM]:
    """The engine's sync path without starting vLLM (its state as ``__init__`` leaves it for the tiny model)."""
    generator = object.__new__(VLLMGenerator)
    generator.llm = FakeLLM()
    generator.dtype, generator.tied_embeddings, generator.policy_version = "float32", True, 3
    generator.weight_keys = weight_keys_of(config())
    return generator, generator.llm


def test_vllm_sync_checks_keys_before_its_rpc() -> None:
    generator, llm = fake_vllm_generator()
    new = snapshot(build_tiny_model(config(), seed=1))
    for state, parts in bad_states(new):
        with pytest.raises(ValueError, match="vLLM weight sync to policy version 4") as info:
            generator.load_state_dict(state, policy_version=4)
        for part in parts:
            assert part in str(info.value)
        assert llm.loaded == [] and generator.policy_version == 3
    generator.load_state_dict(new, policy_version=4)
    assert llm.loaded == [set(new) - {"lm_head.weight"}] and generator.policy_version == 4
