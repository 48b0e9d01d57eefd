"""Expected GPU memory per GPU for configs/llama8b.yaml: arithmetic, with constants checked on one H100.

    python cluster/memory_estimate.py     # prints the table in cluster/README.md (tests/test_cluster.py compares)

GB = 1e9 bytes. Parameter counts from the model cards; architecture numbers from Llama-3.1-8B's config.json. The
learner's per-token constants (ACTIVATION_BYTES, LOGIT_BYTES) and HBM_GB were measured by cluster/gpu_check.py on one
H100 (cluster/README.md, "Measured on one H100"); the rest is arithmetic.
"""

from __future__ import annotations

GB = 1e9
HBM_GB = 85.0  # an "80 GB" H100 as torch and vLLM see it: 85.02e9 B (79.2 GiB), measured

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
REDUCE_BUCKET = 5e8  # DeepSpeed's default reduce_bucket_size: one bf16 gradient bucket per rank, kept allocated
SUB_GROUP = 1e9  # DeepSpeed's default sub_group_size: the optimizer steps this many fp32 elements at a time
# Bytes per token, hidden unit and layer of stored activations: Llama-3.1-8B's layer in bf16 with SDPA attention and
# no activation checkpointing, measured 49.0 (Korthikanti et al.'s 34 is for a GPT layer; SwiGLU's 3.5h-wide MLP
# keeps four tensors of that width).
ACTIVATION_BYTES = 49
# Bytes per token and vocabulary entry at the forward/backward peak, measured 22.3: the bf16 logits (2), the fp32
# copy token_logprobs keeps for backward (4) and entropy_from_logits' fp32 temporaries (float copy, log_softmax, exp,
# mask, product: 4 each), all [seq, vocab].
LOGIT_BYTES = 22


def learner_items(params: float = P_8B, layers: int = LAYERS, ranks: int = RANKS, seq: int = SEQ) -> dict[str, float]:
    """Bytes on one learner GPU by item, for a model of ``params`` parameters and ``layers`` decoder layers of
    Llama-3.1-8B's width sharded over ``ranks`` ZeRO-3 ranks, one sequence of ``seq`` tokens per micro-batch
    (cluster/gpu_check.py applies it to the model it measures)."""
    return {
        "model_states": 16 * params / ranks,  # bf16 param 2 + bf16 grad 2 + fp32 master 4 + Adam m 4 + Adam v 4
        "reference": 2 * params / ranks,
        "gradient_bucket": 2 * REDUCE_BUCKET,
        "gathered_params": 2 * LIVE_PARAMS,  # an upper bound; none at world size 1 (DeepSpeed then does not gather)
        "activations": ACTIVATION_BYTES * seq * HIDDEN * layers,  # micro-batch 1, no activation checkpointing
        "logits": LOGIT_BYTES * seq * VOCAB,
    }


def rows() -> list[tuple[str, str, str]]:
    """(GPU, item, estimate) rows, each estimate with its formula."""
    kv_token = 2 * LAYERS * KV_HEADS * HEAD_DIM * 2  # K and V, every layer, bf16
    vllm_left = VLLM_UTILIZATION * HBM_GB * GB - 2 * P_8B
    items = learner_items()
    states, reference, live = items["model_states"], items["reference"], items["gathered_params"]
    activations, logits = items["activations"], items["logits"]
    learner = sum(items.values())
    step = 8 * SUB_GROUP  # fp32 gradient of one sub-group 4 B + AdamW's foreach temporaries ~4 B (measured 8.4 GB)
    judge_weights = 2 * P_70B / JUDGE_TP
    judge_left = JUDGE_UTILIZATION * HBM_GB * GB - judge_weights
    judge_kv_token = 2 * LAYERS_70B * KV_HEADS * HEAD_DIM * 2 / JUDGE_TP  # tensor parallelism splits the KV heads
    return [
        ("generation", "weights, bf16: 8.03e9 x 2 B", f"{2 * P_8B / GB:.1f} GB"),
        (
            "generation",
            f"vLLM's whole budget: {VLLM_UTILIZATION} x {HBM_GB:.0f} GB",
            f"{VLLM_UTILIZATION * HBM_GB:.1f} GB",
        ),
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
        ("learner", "ZeRO-3 gradient bucket: reduce_bucket_size 5e8 x 2 B", f"{items['gradient_bucket'] / GB:.1f} GB"),
        ("learner", "gathered parameters (bound): stage3_max_live_parameters 1e9 x 2 B", f"{live / GB:.1f} GB"),
        (
            "learner",
            f"activations, 1 sequence of {SEQ:,} tokens, no checkpointing: "
            f"{ACTIVATION_BYTES} x s x h x {LAYERS} layers",
            f"{activations / GB:.1f} GB",
        ),
        (
            "learner",
            f"logits of that sequence and their fp32 temporaries: {SEQ:,} x {VOCAB:,} x {LOGIT_BYTES} B",
            f"{logits / GB:.1f} GB",
        ),
        ("learner", "total at the forward/backward peak", f"~{learner / GB:.0f} GB of {HBM_GB:.0f}"),
        (
            "learner",
            "optimizer step (after backward, not in the total): fp32 grads of a 1e9 sub-group + AdamW temporaries",
            f"{step / GB:.1f} GB",
        ),
        (
            "judge",
            f"Llama-3.3-70B weights, bf16, tensor-parallel {JUDGE_TP}: 70.6e9 x 2 B / {JUDGE_TP}",
            f"{judge_weights / GB:.1f} GB",
        ),
        (
            "judge",
            f"KV cache: {JUDGE_UTILIZATION} x {HBM_GB:.0f} GB - weights; {judge_kv_token:,.0f} B per token and GPU",
            f"{judge_left / GB:.1f} GB, <= {judge_left / judge_kv_token / 1e6:.1f}M tokens",
        ),
    ]


def table() -> str:
    lines = ["| GPU | item | estimate |", "|---|---|---|"]
    lines += [f"| {gpu} | {item} | {estimate} |" for gpu, item, estimate in rows()]
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
