"""The per-step pipeline metrics, against numbers worked out by hand."""

from __future__ import annotations

import pytest

from waltz_ray.trainer.metrics import pipeline_metrics


def test_rollout_overlap_is_the_rollout_time_the_step_did_not_wait_for() -> None:
    # rollout stages 0.5 + 1.0 + 0.25 + 0.05 + 0.2 = 2.0 s, of which the step waited 0.5 s: 1.5 s hidden (0.75)
    metrics = {
        "time/conversation_generation": 0.5,
        "time/feedback_generation": 1.0,
        "time/revision_generation": 0.25,
        "time/judge": 0.05,
        "time/reference_logprobs": 0.2,
        "time/rollout_wait": 0.5,
        "time/feedback_update": 3.0,  # a learner stage: not part of the rollout
    }
    out = pipeline_metrics(metrics, wall_s=4.0)
    assert out["time/rollout_overlapped"] == pytest.approx(1.5)
    assert out["time/rollout_overlapped_fraction"] == pytest.approx(0.75)
    # synchronous: the step waited for the whole rollout (and a little more): nothing hidden, never negative
    out = pipeline_metrics({**metrics, "time/rollout_wait": 2.1}, wall_s=5.6)
    assert out["time/rollout_overlapped"] == 0.0 and out["time/rollout_overlapped_fraction"] == 0.0


def test_inline_steps_have_no_overlap_metric() -> None:
    assert "time/rollout_overlapped" not in pipeline_metrics({"time/conversation_generation": 1.0}, wall_s=2.0)
