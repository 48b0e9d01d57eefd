"""What the reliability tests (RELIABILITY.md) share: the two modes each promise is tested in, and what each mode
asserts about a faulty run.

- ``sync`` (``tests.tiny_world``'s pinned run, ``max_staleness: 0``): deterministic for a seed, so a faulty run must
  equal an undisturbed one metric for metric (``same_metrics``).
- ``async`` (the shipped default: one batch generated ahead, the reference scoring on the rollout side): which
  policy version serves a batch generated ahead depends on timing, so two undisturbed runs with one seed differ
  already (RELIABILITY.md); a faulty run is held to the invariants (``assert_invariants``, asserted in both modes):
  it finishes, every step learns all of its episodes, no episode is learned twice, no step is missing or learned
  twice, and no sample is older than the staleness bound.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.tiny_world import WALL_CLOCK

MODES: dict[str, tuple[str, ...]] = {
    "sync": (),
    "async": ("runtime.max_staleness=1", "runtime.reference_on=rollout"),
}
MAX_STALENESS = {"sync": 0, "async": 1}
FAULT_KEYS = (*WALL_CLOCK, "faults/")  # fault counters differ from an undisturbed run by design
AGENTS = ("conversation", "feedback")


def rows(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def same_metrics(ours: list[dict[str, Any]], theirs: list[dict[str, Any]], ignored: Sequence[str] = FAULT_KEYS) -> None:
    """Synchronous mode: every metric of every row equal to the undisturbed run's (wall times and faults aside)."""
    assert [r["step"] for r in ours] == [r["step"] for r in theirs]
    for mine, ref in zip(ours, theirs, strict=True):
        for key, value in ref.items():
            if not key.startswith(tuple(ignored)):
                assert mine[key] == value, (mine["step"], key, mine[key], value)


class LearnedLog:
    """A step hook that appends, after every training step, the episodes the step learned (episode id, prompt id)
    and the launch they came from to a JSON-lines file: the record "no episode learned twice" is checked against
    (across a resume too: the killed run's file and the resumed run's)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.episodes: list[tuple[str, str]] = []

    def __call__(self, trainer: Any, step: int, when: str) -> None:
        rollout = trainer.parts.rollout
        if when == "before" and not getattr(rollout, "_learned_log", False):
            take = rollout.next_batch

            def next_batch(versions: Any) -> Any:  # observes the batch the step learns; changes nothing
                batch = take(versions)
                self.episodes = [(e.episode_id, e.prompt.prompt_id or e.prompt.text) for e in batch.episodes]
                return batch

            rollout.next_batch, rollout._learned_log = next_batch, True
        if when == "after":
            row = {"step": step + 1, "launch": trainer.last_launch, "episodes": self.episodes}
            with self.path.open("a") as f:
                f.write(json.dumps(row) + "\n")


def learned(path: Path, up_to: int | None = None) -> list[dict[str, Any]]:
    """A ``LearnedLog`` file's rows (those of steps <= ``up_to``: what a checkpoint after step ``up_to`` kept)."""
    if not path.is_file():
        return []
    out = [json.loads(line) for line in path.read_text().splitlines()]
    return [r for r in out if up_to is None or r["step"] <= up_to]


def assert_invariants(
    ours: list[dict[str, Any]],
    mode: str,
    learned_rows: list[dict[str, Any]] | None = None,
    steps: int = 4,
    prompts: int = 8,
) -> None:
    """The promises of a run under faults, from its metrics (and what it learned, if recorded); the only ones an
    asynchronous run can be held to (a synchronous one is also equal to an undisturbed run: ``same_metrics``)."""
    max_staleness = MAX_STALENESS[mode]
    assert ours[-1]["step"] == steps and any(k.startswith("eval/") for k in ours[-1]), "the run did not finish"
    train = [r for r in ours if "samples/n_episodes" in r]
    # every step learned once, in order, none missing (across a resume too: metrics.jsonl is cut to the checkpoint)
    assert [r["step"] for r in train] == list(range(1, steps + 1))
    for r in train:
        assert r["samples/n_episodes"] == prompts, (r["step"], r["samples/n_episodes"])  # nothing lost
        assert r["faults/duplicate_episodes"] == 0, r["step"]  # nothing the run had learned came back
        for agent in AGENTS:  # the staleness bound held for every sample learned
            assert r.get(f"staleness/{agent}/max", 0.0) <= max_staleness, (r["step"], agent)
            lags = [int(k.rsplit("_", 1)[1]) for k in r if k.startswith(f"staleness/{agent}/lag_")]
            assert all(lag <= max_staleness for lag in lags), (r["step"], agent, lags)
    if learned_rows is not None:
        assert sorted(r["step"] for r in learned_rows) == list(range(1, steps + 1)), learned_rows
        assert all(len(r["episodes"]) == prompts for r in learned_rows)
        ids = [eid for r in learned_rows for eid, _ in r["episodes"]]
        assert len(ids) == len(set(ids)) == steps * prompts, "an episode was learned twice"
        # and no prompt twice: the tiny world's steps draw fewer prompts than one epoch of the 280 training prompts
        prompt_ids = [pid for r in learned_rows for _, pid in r["episodes"]]
        assert len(prompt_ids) == len(set(prompt_ids)), "a prompt was drawn twice (the data position was lost)"
        by_step = sorted(learned_rows, key=lambda r: r["step"])
        launches = [r["launch"] for r in by_step]
        assert launches == sorted(set(launches)), f"a launch was learned twice or out of order: {launches}"


def assert_promises(
    mode: str, ours: list[dict[str, Any]], clean: Path | None, learned_rows: list[dict[str, Any]] | None = None
) -> None:
    """Both modes: the invariants; synchronous mode also: equal to the undisturbed run ``clean`` metric for metric."""
    assert_invariants(ours, mode, learned_rows)
    if mode == "sync":
        assert clean is not None
        same_metrics(ours, rows(clean))


def fault_counters(ours: list[dict[str, Any]]) -> dict[str, float]:
    """The last training row's fault and queue counters (cumulative), for the log and the assertions."""
    last = [r for r in ours if "samples/n_episodes" in r][-1]
    return {k: v for k, v in last.items() if k.startswith(("faults/", "queue/dropped_stale", "queue/admitted"))}
