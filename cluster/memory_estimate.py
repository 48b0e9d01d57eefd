"""Expected GPU memory per GPU for configs/llama8b.yaml: arithmetic, not a measurement.

    python cluster/memory_estimate.py     # prints the table in cluster/README.md (tests/test_cluster.py compares)

GB = 1e9 bytes. Parameter counts from the model cards; architecture numbers from Llama-3.1-8B's config.json.
"""

from __future__ import annotations

GB = 1e9
HBM_GB = 80  # one A100 80 GB / H100 80 GB

P_8B = 8.03e9  # Llama-3.1-8B-Instruct parameters
P_70B = 70.6e9  # Llama-3.3-70B-Instruct parameters (the judge)
LAYERS, HIDDEN, KV_HEADS, HEAD_DIM, VOCAB = 32, 4096, 8, 128, 128256  # Llama-3.1-8B
LAYERS_70B = 80  # Llama-3.3-70B: also 8 KV heads of 128

VLLM_UTILIZATION = 0.85  # agents.*.gpu_memory_utilization in configs/llama8b.yaml (tests/test_cluster.py checks)
JUDGE_UTILIZATION = 0.9  # --gpu-memory-utilization of the judge server (cluster/start_judge_server.sh)
JUDGE_TP = 8
RANKS = 4  # learner.num_workers: ZeRO-3 ranks per agent
SEQ = 4096  # tokens in one learner sequence, an upper bound: prompt + c0 + feedback + c1 (1,024 new tokens each)
LIVE_PARAMS = 1e9  # DeepSpeed's default stage3_max_live_parameters (the learner does not set it)


def rows() -> list[tuple[str, str, str]]:
    """(GPU, item, estimate) rows, each estimate with its formula."""
    kv_token = 2 * LAYERS * KV_HEADS * HEAD_DIM * 2  # K and V, every layer, bf16
    vllm_left = VLLM_UTILIZATION * HBM_GB * GB - 2 * P_8B
    states = 16 * P_8B / RANKS  # bf16 param 2 + bf16 grad 2 + fp32 master 4 + Adam m 4 + Adam v 4
    reference = 2 * P_8B / RANKS
    live = 2 * LIVE_PARAMS
    activations = 34 * SEQ * HIDDEN * LAYERS  # micro-batch 1, no activation checkpointing, flash/SDPA attention
    logits = SEQ * VOCAB * 4  # fp32 log-probabilities of one sequence
    learner = states + reference + live + activations + logits
    judge_weights = 2 * P_70B / JUDGE_TP
    judge_left = JUDGE_UTILIZATION * HBM_GB * GB - judge_weights
    judge_kv_token = 2 * LAYERS_70B * KV_HEADS * HEAD_DIM * 2 / JUDGE_TP  # tensor parallelism splits the KV heads
    return [
        ("generation", "weights, bf16: 8.03e9 x 2 B", f"{2 * P_8B / GB:.1f} GB"),
        ("generation", f"vLLM's whole budget: {VLLM_UTILIZATION} x {HBM_GB} GB", f"{VLLM_UTILIZATION * HBM_GB:.1f} GB"),
        ("generation", "left for KV cache and activations: budget - weights", f"{vllm_left / GB:.1f} GB"),
        (
            "generation",
            f"KV cache per token: 2 x {LAYERS} layers x {KV_HEADS} KV heads x {HEAD_DIM} x 2 B = {kv_token:,} B",
            f"<= {vllm_left / kv_token / 1e3:.0f}k tokens",
        ),
        (
            "learner",
            f"ZeRO-3 model states: 16 B/param (bf16 param 2 + grad 2, fp32 master 4 + Adam m 4 + v 4) / {RANKS} ranks",
            f"{states / GB:.1f} GB",
        ),
        ("learner", f"  of which fp32 master + m + v: 12 B x 8.03e9 / {RANKS}", f"{12 * P_8B / RANKS / GB:.1f} GB"),
        ("learner", f"reference model, bf16, ZeRO-3 sharded: 2 B x 8.03e9 / {RANKS}", f"{reference / GB:.1f} GB"),
        ("learner", "gathered parameters: stage3_max_live_parameters 1e9 x 2 B", f"{live / GB:.1f} GB"),
        (
            "learner",
            f"activations, 1 sequence of {SEQ:,} tokens, no checkpointing: 34 x s x h x {LAYERS} layers (rough)",
            f"{activations / GB:.1f} GB",
        ),
        ("learner", f"fp32 logits of that sequence: {SEQ:,} x {VOCAB:,} x 4 B", f"{logits / GB:.1f} GB"),
        ("learner", "total", f"~{learner / GB:.0f} GB of {HBM_GB}"),
        (
            "judge",
            f"Llama-3.3-70B weights, bf16, tensor-parallel {JUDGE_TP}: 70.6e9 x 2 B / {JUDGE_TP}",
            f"{judge_weights / GB:.1f} GB",
        ),
        (
            "judge",
            f"KV cache: {JUDGE_UTILIZATION} x {HBM_GB} GB - weights; {judge_kv_token:,.0f} B per token and GPU",
            f"{judge_left / GB:.1f} GB, <= {judge_left / judge_kv_token / 1e6:.1f}M tokens",
        ),
    ]


def table() -> str:
    lines = ["| GPU | item | estimate |", "|---|---|---|"]
    lines += [f"| {gpu} | {item} | {estimate} |" for gpu, item, estimate in rows()]
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
