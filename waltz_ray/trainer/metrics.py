"""Per-step metrics of a training run: protocol rates of the training rollout, the DIR distribution, tokens
generated, and how busy each pool was (from the stage timers and the step's wall time)."""

from __future__ import annotations

from typing import Any

from waltz_ray.core.metrics import pair_metrics
from waltz_ray.types import Episode, Sample


def rollout_metrics(episodes: list[Episode], fb_samples: list[Sample], conv_samples: list[Sample]) -> dict[str, float]:
    """Per-step training-rollout metrics: protocol rates, DIR distribution, feedback length (docs/method.md)."""
    rollout = {f"rollout/{k}": v for k, v in pair_metrics(episodes).items()}
    dirs = [s.reward_terms.get("dir", 0.0) for s in fb_samples]
    lengths = [len(e.rounds[0].feedback.token_ids) for e in episodes if e.rounds[0].feedback is not None]
    rollout.update(
        {
            "feedback/dir_mean": sum(dirs) / max(1, len(dirs)),
            "feedback/dir_positive": sum(1 for d in dirs if d > 0) / max(1, len(dirs)),
            "feedback/dir_negative": sum(1 for d in dirs if d < 0) / max(1, len(dirs)),
            "feedback/length_tokens": sum(lengths) / max(1, len(lengths)),
            "conversation/type_b_share": sum(1 for s in conv_samples if s.kind == "B") / max(1, len(conv_samples)),
        }
    )
    return rollout


def generated_tokens(episodes: list[Episode]) -> dict[str, float]:
    """Tokens each agent generated for this step's episodes (every round), and the responses judged."""
    conv = sum(len(r.response.token_ids) for e in episodes for r in e.rounds)
    fb = sum(len(r.feedback.token_ids) for e in episodes for r in e.rounds if r.feedback is not None)
    judged = sum(len(e.rounds) for e in episodes)
    return {
        "tokens/conversation_generated": float(conv),
        "tokens/feedback_generated": float(fb),
        "judge/n_responses": float(judged),
    }


# The rollout's timed stages (run by the rollout actor on Ray, before the learners in the inline runtime).
ROLLOUT_STAGES = (
    "conversation_generation",
    "feedback_generation",
    "revision_generation",
    "judge",
    "reference_logprobs",
)

# Which timed stages keep each pool busy (the inline runtime has the same names, one process standing in for all).
POOL_STAGES = {
    "conversation_generation": ("conversation_generation", "revision_generation"),
    "feedback_generation": ("feedback_generation",),
    "judge": ("judge",),
    "reference": ("reference_logprobs",),
    "conversation_learner": ("conversation_logprobs", "conversation_update"),
    "feedback_learner": ("feedback_logprobs", "feedback_update"),
}


def pipeline_metrics(metrics: dict[str, Any], wall_s: float) -> dict[str, float]:
    """Throughput and idle time per pool for one step, from its stage timers and its wall time.

    ``pool/<name>_idle_fraction`` = 1 - (the pool's stage seconds) / (step wall seconds). With ``max_staleness`` > 0
    the rollout stages were timed on the batch produced while the previous step learned, so this is a per-step
    estimate; its mean over a run is the pool's idle share. ``time/rollout_overlapped`` (Ray runtime): the seconds
    of this batch's rollout stages the step did not wait for, i.e. hidden behind the previous step's learning
    (rollout stages minus ``time/rollout_wait``, at least 0; about 0 when synchronous), and
    ``time/rollout_overlapped_fraction`` that over the rollout stages. ``judge/latency_s`` is the judge stage of the
    step (one batched call per rollout), ``judge/latency_s_per_response`` that divided by the responses judged."""
    wall = max(wall_s, 1e-9)
    out = {"time/step_wall": wall_s}
    conv, fb = metrics.get("tokens/conversation_generated", 0.0), metrics.get("tokens/feedback_generated", 0.0)
    out["throughput/tokens_per_s"] = (conv + fb) / wall
    out["throughput/conversation_tokens_per_s"] = conv / wall
    out["throughput/feedback_tokens_per_s"] = fb / wall
    for pool, stages in POOL_STAGES.items():
        timed = [metrics[f"time/{s}"] for s in stages if f"time/{s}" in metrics]
        if timed:
            out[f"pool/{pool}_idle_fraction"] = max(0.0, 1.0 - sum(timed) / wall)
    if "time/rollout_wait" in metrics:
        rollout = sum(metrics.get(f"time/{s}", 0.0) for s in ROLLOUT_STAGES)
        hidden = max(0.0, rollout - metrics["time/rollout_wait"])
        out["time/rollout_overlapped"] = hidden
        out["time/rollout_overlapped_fraction"] = hidden / rollout if rollout > 0 else 0.0
    if "time/judge" in metrics:
        judged = metrics.get("judge/n_responses", 0.0)
        out["judge/latency_s"] = metrics["time/judge"]
        if judged:
            out["judge/latency_s_per_response"] = metrics["time/judge"] / judged
    return out


def sample_table(episodes: list[Episode]) -> tuple[list[str], list[list[Any]]]:
    columns = ["prompt", "label", "c0", "feedback", "c1", "judge_c0", "judge_final"]
    rows = []
    for e in episodes:
        fb = e.rounds[0].feedback
        rows.append(
            [
                e.prompt.text,
                e.prompt.label,
                e.rounds[0].response.text,
                fb.text if fb else "",
                e.final.response.text if e.revised else "",
                str(e.rounds[0].judge),
                str(e.final.judge),
            ]
        )
    return columns, rows
