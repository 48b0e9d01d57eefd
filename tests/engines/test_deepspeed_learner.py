"""DeepSpeedLearner for real on CPU/gloo (no mocks): ZeRO 0-3 against the plain-torch learner, checkpoint round trips,
and two data-parallel ranks in Ray actors against the single-process update.

World size 1 runs in a subprocess so DeepSpeed and torch.distributed state never leak into the pytest process; the
Ray test only imports ``LearnerWorker`` here (the module imports deepspeed lazily) and runs DeepSpeed in the actors.

Tolerances. Everything is fp32 and deterministic; the DeepSpeed and torch paths differ only in summation order
(ZeRO flattens parameters into one buffer, computes the clip norm per partition, ZeRO-3 gathers/reduces in buckets,
and with two ranks each rank sums its own micro-batches before the all-reduce): gradients agree to a few fp32 ulps.
Two AdamW steps (two PPO epochs) amplify that somewhat (the second step's m/sqrt(v) depends on the ratio of two
gradients, and epoch 2 runs on weights that already differ by ulps). Measured: ZeRO-0 bit-identical, ZeRO-1/2
<= 5e-7, ZeRO-3 <= 2.2e-6, world 2 similar, against a per-step update of ~2e-2 (lr 1e-2). ATOL = 1e-5 (5e-4 of the
update) leaves ~5x headroom; a dropped or double-counted micro-batch or shard, or per-shard token normalisation,
moves weights by O(update). AdamW and clipping ignore a *uniform* gradient scale, so the pre-clip gradient norm
(relative 1e-5) is what pins the rank-averaging compensation.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from waltz_ray.config import AlgorithmConfig, LearnerConfig
from waltz_ray.core.losses import off_policy_summary, truncated_is_weights
from waltz_ray.engines.learner import OffPolicy, TokenBatch, TorchLearner, make_batch
from waltz_ray.types import Completion

ROOT = Path(__file__).resolve().parents[2]

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "A learner takes one optimizer step per epoch over its shard of the batch.",
    "ZeRO partitions optimizer states, gradients and parameters across ranks.",
    "Two agents talk: the conversation agent answers and the feedback agent reviews.",
] * 4

# Every position scored: shards and micro-batches then run the output layer on identical rows, so the sharding
# checks below hold to float rounding (scoring from each piece's first action token gives the same log-probs, but
# pieces of different widths round differently and lr 1e-2 AdamW magnifies that past ATOL).
LEARNER = {"lr": 1e-2, "weight_decay": 0.1, "grad_clip": 0.2, "micro_batch_size": 2, "logits_from_first_action": False}
# grpo + k3 KL exercises the KL term; two PPO epochs exercise clipping and two optimizer steps per update.
ALGORITHM = {
    "advantage_estimator": "grpo",
    "samples_per_prompt": 2,
    "kl_coef": 0.1,
    "kl_estimator": "k3",
    "clip_eps": 0.2,
    "ppo_epochs": 2,
}
ATOL = 1e-5
STAT_FIELDS = ("loss", "clip_fraction", "approx_kl", "entropy", "grad_norm")


# ------------------------------------------------------------------------------------------------- shared helpers
def build_model_dir(out: Path) -> Path:
    """A 1-layer, hidden-64 Llama with a locally trained byte-level BPE, saved like a hub checkpoint."""
    from transformers import AutoTokenizer

    from waltz_ray.worlds.tiny.model import build_tiny_model, save_model, tiny_llama_config
    from waltz_ray.worlds.tiny.tokenizer import train_tokenizer

    train_tokenizer(CORPUS, 320, out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    ids = {"bos": tokenizer.bos_token_id, "eos": tokenizer.eos_token_id, "pad": tokenizer.pad_token_id}
    model = build_tiny_model(tiny_llama_config(len(tokenizer), 64, 1, ids), seed=0)
    save_model(model, tokenizer, out)
    return out


def load_model(path: str | Path) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def fixed_inputs(vocab_size: int, pad_id: int) -> tuple[TokenBatch, torch.Tensor, torch.Tensor]:
    """5 rows of uneven length (2 micro-batches of 2 + 1 in one process; shards of 3 and 2 rows with two ranks),
    per-token advantages, and a reference-log-prob offset so the KL term has a gradient from the first epoch."""
    gen = torch.Generator().manual_seed(1234)
    completions = []
    for _ in range(5):
        prompt = torch.randint(10, vocab_size, (int(torch.randint(2, 6, (1,), generator=gen)),), generator=gen)
        action = torch.randint(10, vocab_size, (int(torch.randint(1, 5, (1,), generator=gen)),), generator=gen)
        completions.append(Completion("", tuple(prompt.tolist()), tuple(action.tolist())))
    batch = make_batch(completions, pad_id)
    advantages = torch.randn(batch.action_mask.shape, generator=gen) * batch.action_mask
    ref_offset = 0.3 * torch.randn(batch.action_mask.shape, generator=gen) * batch.action_mask
    return batch, advantages, ref_offset


def torch_run(model_dir: Path, batch: TokenBatch, advantages: torch.Tensor, ref_offset: torch.Tensor) -> dict[str, Any]:
    """The plain-torch learner: two updates (two PPO epochs each) on the fixed batch; weights after each."""
    torch.manual_seed(0)
    learner = TorchLearner(
        load_model(model_dir),
        load_model(model_dir),
        LearnerConfig(**LEARNER),
        AlgorithmConfig(**ALGORITHM),
    )
    initial = {k: v.clone() for k, v in learner.policy.state_dict().items()}
    old, ref = learner.logprobs(batch)
    ref = ref + ref_offset
    stats1 = learner.update(batch, old, ref, advantages)
    after1 = {k: v.clone() for k, v in learner.policy.state_dict().items()}
    old2, _ = learner.logprobs(batch)
    stats2 = learner.update(batch, old2, ref, advantages)
    after2 = {k: v.clone() for k, v in learner.policy.state_dict().items()}
    return {
        "initial": initial,
        "old": old,
        "ref": ref,
        "old2": old2,
        "stats": [stats1, stats2],
        "after": [after1, after2],
    }


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys(), sorted(set(a) ^ set(b))
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def stats_diff(a: Any, b: Any) -> float:
    return max(abs(getattr(a, f) - getattr(b, f)) for f in STAT_FIELDS)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_model_dir(tmp_path_factory.mktemp("ds_tiny"))


# ------------------------------------------------------------------------------------------------- world size 1
def world1_main(model_dir: str, ckpt_dir: str, out_json: str) -> None:
    """Subprocess body: one process group, ZeRO stages 0-3 in sequence, each compared with the torch learner."""
    from transformers import AutoTokenizer

    from waltz_ray.engines.deepspeed_learner import DeepSpeedLearner
    from waltz_ray.engines.distributed import free_port, init_distributed

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    batch, advantages, ref_offset = fixed_inputs(len(tokenizer), tokenizer.pad_token_id)
    expected = torch_run(Path(model_dir), batch, advantages, ref_offset)
    init_distributed(0, 1, "127.0.0.1", free_port(), timeout_s=120)
    results: dict[str, Any] = {}
    for stage in (0, 1, 2, 3):
        t0 = time.perf_counter()
        learner = DeepSpeedLearner(
            load_model(model_dir),
            load_model(model_dir),
            LearnerConfig(**LEARNER, backend="deepspeed", zero_stage=stage),
            AlgorithmConfig(**ALGORITHM),
        )
        t_init = time.perf_counter() - t0
        old, ref = learner.logprobs(batch)
        ref = ref + ref_offset
        t1 = time.perf_counter()
        stats1 = learner.update(batch, old, ref, advantages)
        t_update = time.perf_counter() - t1
        after1 = learner.state_dict_for_sync()
        learner.save_checkpoint(ckpt_dir, f"stage{stage}")
        old2, _ = learner.logprobs(batch)
        stats2 = learner.update(batch, old2, ref, advantages)
        after2 = learner.state_dict_for_sync()
        # Round trip: back to the post-update-1 state (weights, Adam moments and step count), then update 2 again.
        learner.load_checkpoint(ckpt_dir, f"stage{stage}")
        reloaded = learner.state_dict_for_sync()
        old2_again, _ = learner.logprobs(batch)
        learner.update(batch, old2_again, ref, advantages)
        after2_again = learner.state_dict_for_sync()
        results[str(stage)] = {
            "init_s": t_init,
            "update_s": t_update,
            "logprob_diff": float((old - expected["old"]).abs().max()),
            "update1_diff": max_diff(after1, expected["after"][0]),
            "update2_diff": max_diff(after2, expected["after"][1]),
            "update_size": max_diff(after1, expected["initial"]),
            "stats_diff": max(stats_diff(stats1, expected["stats"][0]), stats_diff(stats2, expected["stats"][1])),
            "grad_norm": stats1.grad_norm,
            "expected_grad_norm": expected["stats"][0].grad_norm,
            "reload_diff": max_diff(reloaded, after1),
            "roundtrip_diff": max_diff(after2_again, after2),
            "version": learner.policy_version,
            "skipped": stats1.skipped or stats2.skipped,
        }
        del learner
    Path(out_json).write_text(json.dumps(results, indent=1))


@pytest.mark.slow  # four DeepSpeed engines in a subprocess: about 15-20 s here, the longest test of make fast-test
def test_world1_zero_stages_match_torch_and_checkpoints_round_trip(model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "world1.json"
    code = (
        "import sys; from tests.engines.test_deepspeed_learner import world1_main; "
        "world1_main(sys.argv[1], sys.argv[2], sys.argv[3])"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", code, str(model_dir), str(tmp_path / "ckpt"), str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    results = json.loads(out.read_text())
    print(json.dumps({s: {k: r[k] for k in ("init_s", "update_s")} for s, r in results.items()}))
    for stage, r in results.items():
        assert r["grad_norm"] > LEARNER["grad_clip"], f"stage {stage}: clipping should be active in this test"
        assert r["update_size"] > 100 * ATOL, f"stage {stage}: the update is too small to compare"
        assert r["logprob_diff"] < 1e-5, f"stage {stage}: {r}"
        assert r["update1_diff"] < ATOL, f"stage {stage}: {r}"
        assert r["update2_diff"] < ATOL, f"stage {stage}: {r}"
        assert r["stats_diff"] < 1e-4, f"stage {stage}: {r}"
        # AdamW and norm clipping are both invariant to a uniform gradient scale, so the weights alone would not
        # catch a x2 (rank averaging) or /n (accumulation) error: the pre-clip gradient norm does.
        assert abs(r["grad_norm"] - r["expected_grad_norm"]) < 1e-5 * r["expected_grad_norm"], f"stage {stage}: {r}"
        # Same process, same data, same order of operations: a restored state must reproduce update 2 exactly.
        assert r["reload_diff"] == 0.0, f"stage {stage}: {r}"
        assert r["roundtrip_diff"] < 1e-7, f"stage {stage}: {r}"
        assert r["version"] == 2 and not r["skipped"]


# ------------------------------------------------------------------------------- world size 1, fused importance weights
OFF_POLICY_FIELDS = ("offpolicy_token_fraction", "offpolicy_is_weight_mean", "offpolicy_is_truncated")
# DeepSpeed against torch after ONE AdamW step from fresh moments: the step is lr·g/(|g| + eps), which turns the
# summation-order ulps of a near-zero gradient into a visible difference. Measured: ZeRO-0 0.0, ZeRO-3 1.02e-5 (both
# paths alike) against an update of 1.1e-2; 5e-5 is 0.5% of it. The fused/separate comparison is the tight one.
FUSED_TORCH_ATOL = 5e-5


def stale_off_policy(batch: TokenBatch, old: torch.Tensor) -> OffPolicy:
    """Rows 0, 2 and 3 of ``fixed_inputs`` stale, their behaviour log-probs the learner's offset by U(−1.2, 0.6): some
    weights capped at 2, some below 1."""
    mask = batch.action_mask
    stale = mask * torch.tensor([[1.0], [0.0], [1.0], [1.0], [0.0]])
    offsets = torch.empty(mask.shape).uniform_(-1.2, 0.6, generator=torch.Generator().manual_seed(7))
    return OffPolicy((old + offsets) * stale, stale, 2.0)


def world1_fused_main(model_dir: str, out_json: str) -> None:
    """Subprocess body: one epoch on a stale batch, ZeRO 0 and 3, each with the separate scoring pass (weights applied
    to the advantages from ``logprobs``) and fused (``off_policy`` on the update's own forward pass), against the
    plain-torch learner's fused update."""
    from transformers import AutoTokenizer

    from waltz_ray.engines.deepspeed_learner import DeepSpeedLearner
    from waltz_ray.engines.distributed import free_port, init_distributed

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    batch, advantages, ref_offset = fixed_inputs(len(tokenizer), tokenizer.pad_token_id)
    algorithm = AlgorithmConfig(**{**ALGORITHM, "ppo_epochs": 1})
    torch.manual_seed(0)
    reference = TorchLearner(load_model(model_dir), load_model(model_dir), LearnerConfig(**LEARNER), algorithm)
    initial = {k: v.clone() for k, v in reference.policy.state_dict().items()}
    old, ref = reference.logprobs(batch)
    assert old is not None and ref is not None
    ref = ref + ref_offset
    off = stale_off_policy(batch, old)
    expected_stats = reference.update(batch, None, ref, advantages, off_policy=off)
    expected = {k: v.clone() for k, v in reference.policy.state_dict().items()}
    init_distributed(0, 1, "127.0.0.1", free_port(), timeout_s=120)
    results: dict[str, Any] = {
        "expected": {f: getattr(expected_stats, f) for f in (*OFF_POLICY_FIELDS, "ref_kl", "loss", "grad_norm")},
        "weights": {"capped": 0.0, "below_one": 0.0},
    }
    for stage in (0, 3):
        after: dict[str, dict[str, torch.Tensor]] = {}
        for path in ("separate", "fused"):
            learner = DeepSpeedLearner(
                load_model(model_dir),
                load_model(model_dir),
                LearnerConfig(**LEARNER, backend="deepspeed", zero_stage=stage),
                algorithm,
            )
            if path == "separate":
                old_ds, _ = learner.logprobs(batch, with_reference=False)
                assert old_ds is not None
                weights = truncated_is_weights(old_ds, off.behaviour_logp, off.stale_mask, off.cap)
                stale = off.stale_mask
                results["weights"] = {
                    "capped": float(((weights >= off.cap) * stale).sum()),
                    "below_one": float(((weights < 1.0) * stale).sum()),
                }
                stats = learner.update(batch, old_ds, ref, advantages * weights)
                figures = off_policy_summary(
                    float(stale.sum()),
                    float((weights * stale).sum()),
                    float(((weights >= off.cap) * stale).sum()),
                    batch.num_tokens,
                )
            else:
                stats = learner.update(batch, None, ref, advantages, off_policy=off)
                figures = tuple(getattr(stats, f) for f in OFF_POLICY_FIELDS)
            after[path] = learner.state_dict_for_sync()
            results[f"{stage}/{path}"] = {
                "vs_torch": max_diff(after[path], expected),
                "update_size": max_diff(after[path], initial),
                "figures": list(figures),
                "loss": stats.loss,
                "grad_norm": stats.grad_norm,
                "ref_kl": stats.ref_kl,
                "skipped": stats.skipped,
            }
            del learner
        results[f"{stage}/fused_vs_separate"] = max_diff(after["fused"], after["separate"])
    Path(out_json).write_text(json.dumps(results, indent=1))


@pytest.mark.slow  # four DeepSpeed engines in a subprocess
def test_world1_fused_importance_weights_match_the_separate_pass_and_torch(model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "fused.json"
    code = (
        "import sys; from tests.engines.test_deepspeed_learner import world1_fused_main; "
        "world1_fused_main(*sys.argv[1:])"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", code, str(model_dir), str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    results = json.loads(out.read_text())
    print(json.dumps({k: v for k, v in results.items() if k.endswith("fused_vs_separate")}))
    assert results["weights"]["capped"] > 0 and results["weights"]["below_one"] > 0
    expected = results["expected"]
    for stage in (0, 3):
        assert results[f"{stage}/fused_vs_separate"] < 1e-7, f"stage {stage}: {results}"
        for path in ("separate", "fused"):
            r = results[f"{stage}/{path}"]
            assert not r["skipped"] and r["update_size"] > 100 * ATOL, f"stage {stage} {path}: {r}"
            assert r["vs_torch"] < FUSED_TORCH_ATOL, f"stage {stage} {path}: {r}"
            assert r["figures"] == pytest.approx([expected[f] for f in OFF_POLICY_FIELDS], rel=1e-6), (stage, path)
            assert abs(r["grad_norm"] - expected["grad_norm"]) < 1e-5 * expected["grad_norm"], (stage, path)
        assert results[f"{stage}/fused"]["ref_kl"] == pytest.approx(expected["ref_kl"], rel=1e-5)


# ------------------------------------------------------------------------------------------------- world size 2
@pytest.mark.slow
@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_world2_ray_actors_match_whole_batch_update(
    ray_session: Any, model_dir: Path, tmp_path: Path, stage: int
) -> None:
    from transformers import AutoTokenizer

    from waltz_ray.engines.deepspeed_learner import LearnerWorker

    ray = ray_session
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    batch, advantages, ref_offset = fixed_inputs(len(tokenizer), tokenizer.pad_token_id)
    expected = torch_run(model_dir, batch, advantages, ref_offset)

    worker_cls = ray.remote(num_cpus=0.5)(LearnerWorker)
    workers = [worker_cls.remote() for _ in range(2)]
    try:
        port = ray.get(workers[0].pick_master_port.remote(), timeout=120)
        learner_cfg = LearnerConfig(**LEARNER, backend="deepspeed", zero_stage=stage, num_workers=2)
        t0 = time.perf_counter()
        infos = ray.get(
            [
                w.setup.remote(str(model_dir), rank, 2, "127.0.0.1", port, learner_cfg, AlgorithmConfig(**ALGORITHM))
                for rank, w in enumerate(workers)
            ],
            timeout=180,
        )
        t_setup = time.perf_counter() - t0
        logps = ray.get([w.logprobs.remote(batch) for w in workers], timeout=120)
        # each rank scored its shard; the gathered tensors are whole and identical on every action token (a shard
        # starts scoring at its own first action token, so positions before the whole batch's may differ: both 0 or
        # a log-prob no loss reads)
        mask = batch.action_mask
        for old, ref in logps:
            assert torch.allclose(old * mask, expected["old"] * mask, atol=1e-5) and torch.allclose(ref, old)
        old = logps[0][0]
        ref = expected["ref"]
        t1 = time.perf_counter()
        stats = ray.get([w.update.remote(batch, old, ref, advantages) for w in workers], timeout=120)
        t_update = time.perf_counter() - t1
        synced = ray.get([w.state_dict_for_sync.remote() for w in workers], timeout=120)
        # Checkpoint round trip across ranks (each saves its own ZeRO partitions): restore, then repeat update 2.
        ckpt = str(tmp_path / "ckpt")
        ray.get([w.save_checkpoint.remote(ckpt, "step1") for w in workers], timeout=120)
        old2 = ray.get([w.logprobs.remote(batch) for w in workers], timeout=120)[0][0]
        ray.get([w.update.remote(batch, old2, ref, advantages) for w in workers], timeout=120)
        after2 = ray.get([w.state_dict_for_sync.remote() for w in workers], timeout=120)[0]
        ray.get([w.load_checkpoint.remote(ckpt, "step1") for w in workers], timeout=120)
        versions = ray.get([w.get_policy_version.remote() for w in workers], timeout=60)
        old2_again = ray.get([w.logprobs.remote(batch) for w in workers], timeout=120)[0][0]
        ray.get([w.update.remote(batch, old2_again, ref, advantages) for w in workers], timeout=120)
        after2_again = ray.get([w.state_dict_for_sync.remote() for w in workers], timeout=120)[0]
    finally:
        for w in workers:
            ray.kill(w)
    print(f"world2 zero{stage}: setup {t_setup:.1f}s {infos} update {t_update:.2f}s")

    assert synced[1] == {}
    full = synced[0]
    # Sharding invariance: two ranks with the global token count == one process on the whole batch.
    assert max_diff(full, expected["after"][0]) < ATOL
    assert max_diff(full, expected["initial"]) > 100 * ATOL
    for s in stats:  # global stats on every rank; the gradient norm pins the gradient scale (AdamW ignores it)
        assert stats_diff(s, expected["stats"][0]) < 1e-4 and not s.skipped
        assert abs(s.grad_norm - expected["stats"][0].grad_norm) < 1e-5 * expected["stats"][0].grad_norm

    assert versions == [1, 1]
    assert torch.equal(old2_again, old2)
    assert max_diff(after2_again, after2) < 1e-7
    assert max_diff(after2, expected["after"][1]) < ATOL

    fresh = load_model(model_dir)
    reference_shapes = {k: v.shape for k, v in fresh.state_dict().items()}
    assert {k: v.shape for k, v in full.items()} == reference_shapes
    result = fresh.load_state_dict(full, strict=False)
    assert not result.missing_keys and not result.unexpected_keys


@pytest.mark.slow
def test_world2_ray_actors_reduce_the_fused_importance_figures(ray_session: Any, model_dir: Path) -> None:
    """Two ZeRO-3 ranks behind the driver's proxy, one epoch on a stale batch with ``off_policy``: each rank weights
    its own rows, and the offpolicy_* figures returned are the whole batch's (all-reduced), as are the weights.
    (The same check with two gloo processes outside Ray: figures equal torch's to 1e-7, weights 1.1e-6 at ZeRO-0 and
    1.02e-5 at ZeRO-3.)"""
    from transformers import AutoTokenizer

    from waltz_ray.engines.deepspeed_learner import LearnerWorker
    from waltz_ray.runtime.proxies import Pool, RemoteLearnerGroup

    ray = ray_session
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    batch, advantages, ref_offset = fixed_inputs(len(tokenizer), tokenizer.pad_token_id)
    algorithm = AlgorithmConfig(**{**ALGORITHM, "ppo_epochs": 1})
    torch.manual_seed(0)
    reference = TorchLearner(load_model(model_dir), load_model(model_dir), LearnerConfig(**LEARNER), algorithm)
    old, ref = reference.logprobs(batch)
    assert old is not None and ref is not None
    ref = ref + ref_offset
    off = stale_off_policy(batch, old)
    expected = reference.update(batch, None, ref, advantages, off_policy=off)
    initial = {k: v.clone() for k, v in load_model(model_dir).state_dict().items()}

    worker_cls = ray.remote(num_cpus=0.5)(LearnerWorker)
    workers = [worker_cls.remote() for _ in range(2)]
    try:
        port = ray.get(workers[0].pick_master_port.remote(), timeout=120)
        learner_cfg = LearnerConfig(**LEARNER, backend="deepspeed", zero_stage=3, num_workers=2)
        ray.get(
            [
                w.setup.remote(str(model_dir), rank, 2, "127.0.0.1", port, learner_cfg, algorithm)
                for rank, w in enumerate(workers)
            ],
            timeout=180,
        )
        group = RemoteLearnerGroup(Pool("feedback_learner", workers), timeout_s=120)  # as the driver sends it
        stats = group.update(batch, None, ref, advantages, off_policy=off)
        full = ray.get([w.state_dict_for_sync.remote() for w in workers], timeout=120)[0]
    finally:
        for w in workers:
            ray.kill(w)
    want = [getattr(expected, f) for f in OFF_POLICY_FIELDS]
    assert want[0] > 0 and want[2] > 0
    # rank 0's answer; its own shard alone would give about half the token fraction
    assert [getattr(stats, f) for f in OFF_POLICY_FIELDS] == pytest.approx(want, rel=1e-6) and not stats.skipped
    assert stats.ref_kl == pytest.approx(expected.ref_kl, rel=1e-5) and group.policy_version == 1
    assert max_diff(full, initial) > 100 * ATOL
    assert max_diff(full, dict(reference.policy.state_dict())) < FUSED_TORCH_ATOL
