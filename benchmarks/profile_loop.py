"""Profile of the tiny training loop, and an A/B of the Ray driver's learner-group scheduling, in one invocation.

Profile (``--profile inline`` or ``ray``): ``configs/tiny.yaml`` for ``--stage1`` + ``--stage2`` steps under
cProfile (the training steps only: the trainer is built, and the initial evaluation run, before the profiler starts;
the final evaluation is left out too). Printed: the mean seconds per step of every timed stage (``time/*`` of
metrics.jsonl; in the Ray runtime these are the actors' stages as the driver sees them) with its share of the step,
then the cProfile entries with the most cumulative and the most internal time. cProfile sees only the process it runs
in: inline that is everything; on Ray it is the driver, whose time is mostly spent waiting on the actors (and only
its main thread: with ``runtime.concurrent_updates`` the learner-group calls wait in threads of their own).

A/B (``--ab``): the synchronous Ray runtime (``max_staleness=0``), every step in stage 2 so both agents update each
step, with ``runtime.concurrent_updates=false`` (the driver updates the feedback agent's learner group, then the
conversation agent's: the old scheduling) and ``true`` (both groups' log-probs and updates in flight at once), in one
Ray session, ``--rounds`` rounds, the order alternating from round to round (sequential first in even rounds). Only
the training-step loop is timed (``overlap.run_once``: first step start to last step end; actor start-up and the
evaluations are not). Both variants compute the same metrics and weights (tests/runtime/test_runtime.py). Printed: the
per-stage means of both variants, the per-round ratios, ``speedup_totals=`` (summed loop walls, sequential over
concurrent) and, as the last line, ``speedup=<median of the per-round ratios>``: on a shared machine a load spike
lands in single runs, which the median of back-to-back pairs resists (as in ``generation.py``).

    python benchmarks/profile_loop.py                                   # inline profile, 2 + 2 steps
    python benchmarks/profile_loop.py --profile ray --stage1 0 --stage2 4
    python benchmarks/profile_loop.py --profile none --ab --steps 6 --rounds 2 --out runs/profile_ab
    python benchmarks/profile_loop.py --reduced --ab                    # seconds-scale smoke run (test suite)

Every run uses one torch thread per process (``runtime.num_threads=1``) unless ``--set`` says otherwise: on a
shared 2-core machine two OpenMP threads per process are several times slower as soon as anything else runs.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import logging
import os
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BASE = [
    "stages.eval_every=0",
    "data.eval_limit=8",
    "logging.wandb_mode=disabled",
    "logging.progress=false",
    "logging.sample_table_every=0",
    "checkpoint.every=0",
    "runtime.num_threads=1",
]
VARIANTS = {"sequential": False, "concurrent": True}  # name -> runtime.concurrent_updates


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "tiny.yaml"), help="YAML config")
    parser.add_argument("--profile", choices=("inline", "ray", "none"), default="inline", help="runtime to profile")
    parser.add_argument("--stage1", type=int, default=2, help="stage-1 steps of the profiled run")
    parser.add_argument("--stage2", type=int, default=2, help="stage-2 steps of the profiled run")
    parser.add_argument("--top", type=int, default=25, help="cProfile entries to print per ordering")
    parser.add_argument("--ab", action="store_true", help="run the Ray A/B of the learner-group scheduling")
    parser.add_argument("--steps", type=int, default=6, help="A/B: stage-2 steps per run")
    parser.add_argument("--rounds", type=int, default=2, help="A/B: rounds (each runs both variants)")
    parser.add_argument("--out", default=None, help="work dir; default a temp dir")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="config override"
    )
    parser.add_argument(
        "--reduced",
        action="store_true",
        help="tiny on-the-fly model (overlap.py's), 1 + 1 profiled steps, A/B 2 steps x 1 round, 4 prompts",
    )
    return parser


def _overlap() -> Any:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import overlap

    return overlap


def stage_means(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Mean seconds per step of every ``time/*`` metric over the step rows."""
    totals: dict[str, float] = {}
    for row in rows:
        for key, value in row.items():
            if key.startswith("time/") and isinstance(value, (int, float)):
                totals[key[5:]] = totals.get(key[5:], 0.0) + float(value)
    return {k: v / max(1, len(rows)) for k, v in totals.items()}


def stage_table(means: dict[str, float]) -> str:
    wall = means.get("step_wall", 0.0)
    lines = [f"{'stage (time/*)':<28}{'s/step':>10}{'share':>8}"]
    for key, value in sorted(means.items(), key=lambda kv: -kv[1]):
        share = f"{value / wall:>8.0%}" if wall and key != "step_wall" else f"{'':>8}"
        lines.append(f"  {key:<26}{value:>10.3f}{share}")
    return "\n".join(lines)


def top_entries(profile: cProfile.Profile, order: str, count: int) -> str:
    text = io.StringIO()
    stats = pstats.Stats(profile, stream=text)
    stats.sort_stats(order).print_stats(count)
    lines = text.getvalue().splitlines()
    start = next((i for i, line in enumerate(lines) if line.lstrip().startswith("ncalls")), 0)
    return "\n".join(line for line in lines[start:] if line.strip())


class StepProfile:
    """A trainer hook switching cProfile on around the training steps only."""

    def __init__(self) -> None:
        self.profile = cProfile.Profile()
        self.profiled_s = 0.0
        self._start = 0.0

    def __call__(self, trainer: Any, step: int, when: str) -> None:
        if when == "before":
            self._start = time.perf_counter()
            self.profile.enable()
        elif when == "after":
            self.profile.disable()
            self.profiled_s += time.perf_counter() - self._start


def build_trainer(runtime: str, config: Any, out: Path, hooks: list[Any]) -> Any:
    if runtime == "ray":
        from waltz_ray.runtime.driver import ray_trainer

        return ray_trainer(config, out, hooks=hooks)
    from waltz_ray.trainer.inline import inline_trainer

    return inline_trainer(config, out, hooks=hooks)


def profile_run(runtime: str, config: Any, out: Path, top: int) -> dict[str, Any]:
    trainer = StepProfile()
    build_trainer(runtime, config, out, [trainer]).run()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "time/step_wall" in r]
    means = stage_means(rows)
    print(f"\n== profile: {runtime} runtime, {len(rows)} steps, {trainer.profiled_s:.2f} s profiled ==")
    print(stage_table(means))
    cumulative = top_entries(trainer.profile, "cumulative", top)
    internal = top_entries(trainer.profile, "tottime", top)
    print(f"\ncProfile, by cumulative time (top {top}):\n{cumulative}")
    print(f"\ncProfile, by internal time (top {top}):\n{internal}")
    trainer.profile.dump_stats(str(out / "train.prof"))
    return {"runtime": runtime, "steps": len(rows), "profiled_s": trainer.profiled_s, "stage_means_s": means}


def ab_runs(args: argparse.Namespace, base: list[str], work: Path) -> dict[str, Any]:
    """Both variants, ``rounds`` times, alternating; loop walls and per-stage means per variant."""
    from waltz_ray.config import load_config

    overlap = _overlap()
    steps = 2 if args.reduced else args.steps
    rounds = 1 if args.reduced else args.rounds
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in VARIANTS}
    for r in range(rounds):
        order = list(VARIANTS) if r % 2 == 0 else list(reversed(VARIANTS))
        for name in order:
            sets = [*base, "runtime.mode=ray", "stages.stage1_steps=0", f"stages.stage2_steps={steps}"]
            config = load_config(args.config, [*sets, *args.overrides, f"runtime.concurrent_updates={VARIANTS[name]}"])
            result = overlap.run_once(config, work / f"ab_{name}_{r}")
            result["stage_means_s"] = {k: v / result["steps"] for k, v in result["stage_totals_s"].items()}
            runs[name].append(result)
            print(f"round {r} {name}: loop wall {result['wall_s']:.2f} s over {result['steps']} steps", flush=True)
    walls = {name: sum(res["wall_s"] for res in results) for name, results in runs.items()}
    paired = [s["wall_s"] / c["wall_s"] for s, c in zip(runs["sequential"], runs["concurrent"], strict=True)]
    return {
        "steps": steps,
        "rounds": rounds,
        "runs": runs,
        "walls_s": walls,
        "paired_ratios": paired,
        "speedup_totals": walls["sequential"] / walls["concurrent"],
        "speedup": statistics.median(paired),
    }


def ab_table(ab: dict[str, Any]) -> str:
    means = {
        name: {k: sum(res["stage_means_s"].get(k, 0.0) for res in results) / len(results) for k in _keys(results)}
        for name, results in ab["runs"].items()
    }
    keys = sorted(set(means["sequential"]) | set(means["concurrent"]), key=lambda k: -means["sequential"].get(k, 0))
    lines = [
        f"\n== A/B: Ray runtime, synchronous, {ab['steps']} stage-2 steps x {ab['rounds']} rounds per variant ==",
        f"{'per-stage mean s/step (time/*)':<34}{'sequential':>12}{'concurrent':>12}",
    ]
    for key in keys:
        lines.append(f"  {key:<32}{means['sequential'].get(key, 0.0):>12.3f}{means['concurrent'].get(key, 0.0):>12.3f}")
    steps = ab["steps"] * ab["rounds"]
    lines.append(
        f"  {'loop wall per step':<32}{ab['walls_s']['sequential'] / steps:>12.3f}"
        f"{ab['walls_s']['concurrent'] / steps:>12.3f}"
    )
    lines.append(
        "paired ratios (sequential / concurrent, per round): " + " ".join(f"{x:.3f}" for x in ab["paired_ratios"])
    )
    return "\n".join(lines)


def _keys(results: list[dict[str, Any]]) -> set[str]:
    return {k for res in results for k in res["stage_means_s"]}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with tempfile.TemporaryDirectory(prefix="waltz-profile-") as tmp:
        work = Path(args.out) if args.out else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        overlap = _overlap()
        base = list(BASE)
        if args.reduced:  # set before Ray starts so the workers see it too
            os.environ["WALTZ_RAY_CACHE"] = str(work / "cache")
            base += [*overlap.REDUCED, f"rollout.prompts_per_step={overlap.REDUCED_PROMPTS}"]
            args.stage1, args.stage2 = min(args.stage1, 1), min(args.stage2, 1)
        from waltz_ray.config import load_config
        from waltz_ray.runtime.driver import ray_session
        from waltz_ray.worlds.tiny.build import init_tiny

        stages = [f"stages.stage1_steps={args.stage1}", f"stages.stage2_steps={args.stage2}"]
        config = load_config(args.config, [*base, *stages, *args.overrides])
        if any(getattr(config.agents, a).model_path.startswith("tiny://") for a in ("conversation", "feedback")):
            init_tiny(config)  # build (or reuse) once, outside everything timed
        summary: dict[str, Any] = {"load_average_start": os.getloadavg()}
        if args.profile == "inline":
            summary["profile"] = profile_run("inline", config, work / "profile_inline", args.top)
        if args.profile == "ray" or args.ab:
            with ray_session():
                if args.profile == "ray":
                    summary["profile"] = profile_run("ray", config, work / "profile_ray", args.top)
                if args.ab:
                    summary["ab"] = ab_runs(args, base, work)
        summary["load_average_end"] = os.getloadavg()
        (work / "profile.json").write_text(json.dumps(summary, indent=2, sort_keys=True))
        # printed after the Ray session ends, so no forwarded worker log can follow the last line
        load = " ".join(f"{x:.2f}" for x in summary["load_average_end"])
        if args.ab:
            print(ab_table(summary["ab"]))
            print(f"load_average={load}")
            print(f"speedup_totals={summary['ab']['speedup_totals']:.3f}")
            print(f"speedup={summary['ab']['speedup']:.3f}", flush=True)
        else:
            print(f"load_average={load}")
            print(f"profiled_s={summary['profile']['profiled_s']:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))  # run from a checkout without installing
    sys.exit(main())
