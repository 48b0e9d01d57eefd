"""VLLMGenerator: the Completion contract, parity with the HF engine, and weight sync.

vLLM's in-process engine monkeypatches ``torch.set_num_threads`` and binds OpenMP threads in whatever process hosts
it, so the vLLM scenario runs in a subprocess that prints JSON; the assertions are made here. vLLM is never imported
by this module (``import vllm`` takes 10-18 s), only looked up with ``find_spec``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from waltz_ray.engines import vllm_engine
from waltz_ray.engines.vllm_worker_ext import checkpoint_files

ROOT = Path(__file__).resolve().parents[2]
HAS_VLLM = importlib.util.find_spec("vllm") is not None

# One subprocess does everything, so vLLM is imported and the engine started once.
SCENARIO = r"""
import json, sys, time
import torch
from waltz_ray.engines.hf import HFGenerator
from waltz_ray.engines.vllm_engine import VLLMGenerator
from waltz_ray.worlds.tiny.model import build_tiny_model, save_model, tiny_llama_config
from waltz_ray.worlds.tiny.tokenizer import train_tokenizer
from waltz_ray.types import GenerationParams

out_dir = sys.argv[1]
timings = {}
start = time.perf_counter()
corpus = [
    "How do I bake bread at home? Mix flour, water, salt and yeast, then knead and bake.",
    "The quick brown fox jumps over the lazy dog.",
    "Please explain how photosynthesis works in plants.",
    "I cannot help with that request, but I can explain the safety rules.",
    "Write a short poem about the sea and the sky.",
] * 4
train_tokenizer(corpus, 320, out_dir)
from transformers import AutoTokenizer
tok = AutoTokenizer.from_pretrained(out_dir)
ids = {"bos": tok.bos_token_id, "eos": tok.eos_token_id, "pad": tok.pad_token_id}
config = tiny_llama_config(len(tok), 128, 2, ids)
config.initializer_range = 0.2  # larger weights than the default 0.02: varied greedy text instead of one token repeated
model = build_tiny_model(config, seed=0)
with torch.no_grad():
    model.model.embed_tokens.weight[tok.eos_token_id] *= 2.0  # (tied) so that some completions stop on EOS
save_model(model, tok, out_dir)
timings["build_s"] = time.perf_counter() - start

chats = [[{"role": "user", "content": text}] for text in (
    "How do I bake bread?", "Explain photosynthesis.", "Write a poem about the sea.", "Hello there",
    "The lazy dog", "Can you help me?", "Salt and yeast", "Tell me about the sky",
)]
greedy = GenerationParams(max_new_tokens=24, temperature=0.0)
sampled = GenerationParams(max_new_tokens=24, temperature=0.7, top_p=1.0, seed=7)

def dump(completions):
    return [
        {"text": c.text, "prompt": list(c.prompt_token_ids), "ids": list(c.token_ids), "logprobs": list(c.logprobs),
         "finish": c.finish_reason, "version": c.policy_version, "error": c.error}
        for c in completions
    ]

def teacher_forced(hf, completions, temperature):
    # log p(token | prefix) under softmax(logits / temperature), recomputed with the HF model
    rows = []
    with torch.no_grad():
        for c in completions:
            ids = torch.tensor([list(c.prompt_token_ids) + list(c.token_ids)])
            logits = hf.model(ids).logits[0, len(c.prompt_token_ids) - 1 : -1].float() / temperature
            lp = torch.log_softmax(logits, -1).gather(-1, torch.tensor(c.token_ids).unsqueeze(-1)).squeeze(-1)
            rows.append(lp.tolist())
    return rows

hf = HFGenerator.from_pretrained(out_dir)
res = {"eos": tok.eos_token_id, "bos": tok.bos_token_id}
start = time.perf_counter()
engine = VLLMGenerator(out_dir, max_model_len=256, seed=0)
timings["engine_start_s"] = time.perf_counter() - start
timings["engine_llm_s"] = engine.startup_seconds
with engine:
    res["empty"] = engine.generate([], greedy)
    start = time.perf_counter()
    res["greedy"] = dump(engine.generate(chats, greedy))
    timings["greedy_s"] = time.perf_counter() - start
    # a chat longer than max_model_len (256) in the batch: vLLM's LLM.generate would refuse the whole batch
    too_long = [{"role": "user", "content": " ".join(["bread"] * 400)}]
    res["max_model_len"] = engine.max_model_len
    res["with_too_long"] = dump(engine.generate([chats[0], too_long, chats[1]], greedy))
    try:  # what the engine used to do: hand the batch to vLLM as it was
        ids = [engine.tokenizer(engine.tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True),
                                add_special_tokens=False)["input_ids"] for c in (chats[0], too_long)]
        engine.llm.generate([{"prompt_token_ids": i} for i in ids], use_tqdm=False)
        res["vllm_refused"] = None
    except Exception as exc:
        res["vllm_refused"] = f"{type(exc).__name__}: {exc}"
    res["hf_greedy"] = dump(hf.generate(chats, greedy))
    start = time.perf_counter()
    first = engine.generate(chats, sampled)
    timings["sampled_s"] = time.perf_counter() - start
    res["sampled"] = dump(first)
    res["sampled_again"] = dump(engine.generate(chats, sampled))
    res["sampled_other_seed"] = dump(engine.generate(chats, GenerationParams(24, 0.7, 1.0, seed=8)))
    res["sampled_hf_logprobs"] = teacher_forced(hf, first, sampled.temperature)

    # Seeded sampling over more prompt tokens than one engine step takes (24 prompts of about 200 tokens, the number
    # first so that no prefix-cache hits shrink them): with chunked prefill vLLM 0.32 rewinds a split request's CPU
    # generator and dies ("CPU Generator does not use offset").
    long_chats = [[{"role": "user", "content": f"{i} " + " ".join(["bread salt yeast"] * 22)}] for i in range(24)]
    res["long_prompt_tokens"] = [len(engine.tokenizer(engine.tokenizer.apply_chat_template(
        c, tokenize=False, add_generation_prompt=True), add_special_tokens=False)["input_ids"]) for c in long_chats]
    res["long_seeded"] = dump(engine.generate(long_chats, GenerationParams(16, 1.0, 1.0, seed=3)))
    scheduler = engine.llm.llm_engine.vllm_config.scheduler_config
    res["chunked_prefill"] = [scheduler.enable_chunked_prefill, scheduler.max_num_batched_tokens]

    # Perturb every weight except the tied lm_head (it is the embedding), then push HF's full state_dict.
    gen = torch.Generator().manual_seed(123)
    state = {k: v + 0.05 * torch.randn(v.shape, generator=gen) for k, v in hf.model.state_dict().items()
             if k != "lm_head.weight"}
    hf.load_state_dict(state, policy_version=1)
    start = time.perf_counter()
    engine.load_state_dict(hf.model.state_dict(), policy_version=1)
    timings["sync_s"] = time.perf_counter() - start
    res["greedy_v1"] = dump(engine.generate(chats, greedy))
    res["hf_greedy_v1"] = dump(hf.generate(chats, greedy))

    # Back to the checkpoint on disk.
    engine.load_weights_from_path(out_dir, policy_version=2)
    res["greedy_v2"] = dump(engine.generate(chats, greedy))
timings["closed"] = engine.llm is None
res["timings"] = timings
print("RESULT " + json.dumps(res))
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    cache = ROOT / ".cache"
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_HOME=str(cache / "hf"),
        VLLM_CACHE_ROOT=str(cache / "vllm"),
        VLLM_NO_USAGE_STATS="1",
        DO_NOT_TRACK="1",
        TOKENIZERS_PARALLELISM="false",
        VLLM_ENABLE_V1_MULTIPROCESSING="0",
        VLLM_CPU_KVCACHE_SPACE="1",
        OMP_NUM_THREADS="2",
        VLLM_CPU_OMP_THREADS_BIND="nobind",
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
    )
    return env


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out_dir = tmp_path_factory.mktemp("vllm") / "tiny"
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", SCENARIO, str(out_dir)],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, (
        f"scenario failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
    )
    result: dict[str, Any] = json.loads(lines[-1][len("RESULT ") :])
    result["timings"]["subprocess_s"] = time.perf_counter() - start
    print("vLLM scenario timings:", json.dumps(result["timings"]))
    return result


def _check_contract(completions: list[dict[str, Any]], eos: int, version: int, max_new: int = 24) -> None:
    for c in completions:
        ids = c["ids"]
        assert 1 <= len(ids) <= max_new
        assert len(c["logprobs"]) == len(ids)
        assert all(lp <= 1e-6 for lp in c["logprobs"])
        assert c["version"] == version
        assert eos not in ids[:-1]  # EOS only ever last
        if ids[-1] == eos:
            assert c["finish"] == "stop"
        else:
            assert c["finish"] == "length" and len(ids) == max_new


def _ids(completions: list[dict[str, Any]]) -> list[list[int]]:
    return [c["ids"] for c in completions]


@pytest.mark.vllm
@pytest.mark.skipif(not HAS_VLLM, reason="vLLM is not installed (pip install 'waltz-ray[cpu]')")
class TestVLLMScenario:
    def test_completion_contract(self, scenario: dict[str, Any]) -> None:
        eos = scenario["eos"]
        assert scenario["empty"] == []
        for key in ("greedy", "sampled", "sampled_again", "sampled_other_seed"):
            _check_contract(scenario[key], eos, version=0)
        _check_contract(scenario["greedy_v1"], eos, version=1)
        _check_contract(scenario["greedy_v2"], eos, version=2)
        finishes = {c["finish"] for c in scenario["greedy"]}
        assert finishes == {"stop", "length"}, "the tiny model should both stop on EOS and run to the length limit"
        assert scenario["timings"]["closed"]

    def test_a_prompt_over_max_model_len_is_rejected_alone(self, scenario: dict[str, Any]) -> None:
        first, rejected, second = scenario["with_too_long"]
        assert (first, second) == (scenario["greedy"][0], scenario["greedy"][1])  # the rest of the batch as usual
        assert rejected["finish"] == "rejected" and rejected["ids"] == [] and rejected["text"] == ""
        assert len(rejected["prompt"]) >= scenario["max_model_len"] == 256
        assert "context holds 256" in rejected["error"]
        assert all(c["error"] is None for c in scenario["greedy"])
        # why the check comes first: vLLM validates every prompt up front and refuses the whole batch
        assert re.search(r"maximum (model|context) length", str(scenario["vllm_refused"]))

    def test_prompts_and_greedy_match_hf(self, scenario: dict[str, Any]) -> None:
        for ours, theirs in zip(scenario["greedy"], scenario["hf_greedy"], strict=True):
            assert ours["prompt"] == theirs["prompt"]
            assert ours["prompt"][0] == scenario["bos"] and ours["prompt"].count(scenario["bos"]) == 1  # no double BOS
        # fp32 greedy decoding of the same weights: identical token ids, text, finish and logprobs
        assert _ids(scenario["greedy"]) == _ids(scenario["hf_greedy"])
        for ours, theirs in zip(scenario["greedy"], scenario["hf_greedy"], strict=True):
            assert (ours["text"], ours["finish"]) == (theirs["text"], theirs["finish"])
            assert ours["logprobs"] == pytest.approx(theirs["logprobs"], abs=1e-3)

    def test_seeded_sampling_and_temperature_scaled_logprobs(self, scenario: dict[str, Any]) -> None:
        assert _ids(scenario["sampled"]) == _ids(scenario["sampled_again"])
        assert scenario["sampled"][0]["logprobs"] == scenario["sampled_again"][0]["logprobs"]
        assert _ids(scenario["sampled"]) != _ids(scenario["sampled_other_seed"])
        assert _ids(scenario["sampled"]) != _ids(scenario["greedy"])
        # logprobs are of softmax(logits / temperature), recomputed here by teacher forcing the HF model
        for ours, reference in zip(scenario["sampled"], scenario["sampled_hf_logprobs"], strict=True):
            assert ours["logprobs"] == pytest.approx(reference, abs=1e-3)

    def test_seeded_batches_longer_than_a_step_are_generated_whole(self, scenario: dict[str, Any]) -> None:
        lengths = scenario["long_prompt_tokens"]
        enabled, budget = scenario["chunked_prefill"]
        assert not enabled and budget >= scenario["max_model_len"]
        assert sum(lengths) > budget and max(lengths) + 16 <= scenario["max_model_len"]  # several steps, no split
        assert len(scenario["long_seeded"]) == 24
        assert all(c["error"] is None and c["ids"] for c in scenario["long_seeded"])

    def test_weight_sync(self, scenario: dict[str, Any]) -> None:
        assert _ids(scenario["greedy_v1"]) != _ids(scenario["greedy"])
        assert _ids(scenario["greedy_v1"]) == _ids(scenario["hf_greedy_v1"])
        for ours, theirs in zip(scenario["greedy_v1"], scenario["hf_greedy_v1"], strict=True):
            assert ours["logprobs"] == pytest.approx(theirs["logprobs"], abs=1e-3)
        # load_weights_from_path restores the checkpoint on disk
        assert _ids(scenario["greedy_v2"]) == _ids(scenario["greedy"])


def test_missing_model_path_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        vllm_engine.VLLMGenerator(missing)
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        vllm_engine.VLLMGenerator(str(missing))


def test_missing_vllm_names_the_extras(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` raise ImportError
    with pytest.raises(ImportError, match=r"waltz-ray\[cpu\].*waltz-ray\[gpu\]"):
        vllm_engine.import_vllm()


def test_checkpoint_files(tmp_path: Path) -> None:
    (tmp_path / "model-00002-of-00002.safetensors").write_bytes(b"")
    (tmp_path / "model-00001-of-00002.safetensors").write_bytes(b"")
    (tmp_path / "training_args.bin").write_bytes(b"")
    assert [p.name for p in checkpoint_files(tmp_path)] == [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ]
    with pytest.raises(FileNotFoundError, match="nowhere"):
        checkpoint_files(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no \*\.safetensors"):
        checkpoint_files(tmp_path / "empty")


def test_cpu_engines_schedule_whole_prompts(monkeypatch: pytest.MonkeyPatch) -> None:
    """On the CPU backend chunked prefill is off and the step budget holds a whole prompt; elsewhere, or when the
    caller set ``enable_chunked_prefill``, nothing changes."""
    monkeypatch.setattr(vllm_engine, "_on_cpu", lambda vllm: True)
    settings = vllm_engine.cpu_prefill_settings
    assert settings(None, {"max_model_len": 1024}) == {"enable_chunked_prefill": False, "max_num_batched_tokens": 2048}
    assert settings(None, {"max_model_len": 8192, "max_num_batched_tokens": 4096})["max_num_batched_tokens"] == 8192
    assert settings(None, {"max_model_len": 512, "max_num_batched_tokens": 16384})["max_num_batched_tokens"] == 16384
    assert settings(None, {"max_model_len": 1024, "enable_chunked_prefill": True}) == {}
    monkeypatch.setattr(vllm_engine, "_on_cpu", lambda vllm: False)
    assert settings(None, {"max_model_len": 1024}) == {}
