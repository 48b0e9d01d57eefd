"""Overlap benchmark: the Ray runtime synchronous (``max_staleness=0``) vs asynchronous (``max_staleness=1``).

All runs happen in ONE invocation and ONE Ray session, on the same model, config and seed, with the same number
of steps and prompts per step (every step in stage 2, so both agents update each step). Each run builds its own
pools (``ray_trainer``), which are torn down before the next run starts.

Fairness: ``--rounds`` (default 3) rounds, each one synchronous and one asynchronous run back to back, the order
alternating (sync first in rounds 1, 3, ..., async first in rounds 2, 4, ...) so a drift in machine load hits both
modes alike. Every turn is generated at full length (``agents.<agent>.generation.min_new_tokens`` set to its
``max_new_tokens``; ``--free-lengths`` turns this off), so both modes generate the same number of tokens whatever
their weights sample; the tokens each run generated (``queue/record_tokens_*`` summed over steps) are reported per
mode all the same. The machine's load average (``os.getloadavg()``) is recorded before and after every run.

What is timed: the training-step loop only. ``train_step`` is wrapped with ``time.perf_counter``; a run's wall
time is the end of its last step minus the start of its first (step 0 includes waiting for the first rollout in
both modes; in between steps only the metrics row is written, since ``stages.eval_every=0``). Not timed: building
the tiny model, starting Ray, building the topology (actor start and model load), the initial and final
evaluations (``data.eval_limit`` prompts, 4 by default) and the final checkpoint.

The config is the shipped default (``configs/tiny.yaml``: reference scored on the rollout side, both learner
groups updated at once); only the pool CPUs, the steps and the mode are set here.

Theoretical limit, from each synchronous run's per-stage times (``time/*`` in its metrics.jsonl, summed over
steps): generation side = the rollout stages (conversation_generation, feedback_generation, revision_generation,
judge, reference_logprobs), learner side = the step's wall time less its wait for the rollout (reward, advantage,
logprobs, updates, weight_sync, the two agents' groups overlapping each other). With one batch in flight ahead
of the learners the best possible speed-up is ``(gen + learn) / max(gen, learn)``; the median over rounds is
reported.

Output (stdout): per-run lines (wall, tokens, load before/after), a table of the medians, one
``round_ratio=`` per round, ``sync_wall_s=`` and ``async_wall_s=`` (medians), ``tokens_sync=`` /
``tokens_async=`` (per run, medians), ``load_average=``, ``theoretical_limit=`` and, as the LAST line,
``overlap_ratio=<median over rounds of sync wall / async wall>``. Everything is written to ``<out>/overlap.json``.

    python benchmarks/overlap.py                          # configs/tiny.yaml, 20 steps, 3 rounds
    python benchmarks/overlap.py --steps 10 --rounds 5 --out runs/overlap --set runtime.num_threads=1
    python benchmarks/overlap.py --reduced                # seconds-scale smoke run (test suite)

Pool CPUs are fractional (0.2 + 0.2 + 0.1 + 2 x 0.1 + 2 x 0.25 = 1.2 <= 2) so every run fits a 2-core machine;
they only reserve Ray resources, every actor runs one torch thread (``runtime.num_threads`` overrides).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# rollout_wait wraps the rollout from the driver's side, step_wall is the whole step, rollout_overlapped* measure
# the overlap itself: none is one side's work
NOT_A_STAGE = ("rollout_wait", "step_wall", "rollout_overlapped", "rollout_overlapped_fraction")
MODES = {"sync": 0, "async": 1}  # run name -> runtime.max_staleness

BASE = [
    "runtime.mode=ray",
    "stages.stage1_steps=0",
    "stages.eval_every=0",
    "data.eval_limit=4",
    "logging.wandb_mode=disabled",
    "logging.progress=false",
    "logging.sample_table_every=0",
    "checkpoint.every=0",
    "runtime.conversation_pool.num_actors=1",
    "runtime.conversation_pool.num_cpus=0.2",
    "runtime.feedback_pool.num_actors=1",
    "runtime.feedback_pool.num_cpus=0.2",
    "runtime.judge_pool.num_actors=1",
    "runtime.judge_pool.num_cpus=0.1",
    "runtime.learner_pool.num_cpus=0.25",
    "runtime.reference_pool.num_cpus=0.1",
]
REDUCED = ["tiny.sft_steps=3", "tiny.hidden_size=64", "tiny.num_layers=1", "runtime.remote_timeout_s=180"]
REDUCED_STEPS, REDUCED_PROMPTS, REDUCED_ROUNDS = 2, 4, 2
AGENT_NAMES = ("conversation", "feedback")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "tiny.yaml"), help="YAML config")
    parser.add_argument("--steps", type=int, default=None, help="training steps per run, all stage 2 (default 20)")
    parser.add_argument("--prompts-per-step", type=int, default=None, help="default: the config's")
    parser.add_argument(
        "--rounds", type=int, default=None, help="sync + async pairs, order alternating (default 3; --reduced 2)"
    )
    parser.add_argument(
        "--free-lengths",
        action="store_true",
        help="let turns end at end-of-turn (default: min_new_tokens = max_new_tokens, every turn full length)",
    )
    parser.add_argument("--out", default=None, help="work dir (runs in <out>/sync, <out>/async); default a temp dir")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="config override"
    )
    parser.add_argument(
        "--reduced",
        action="store_true",
        help=f"tiny on-the-fly model (sft 3 steps, hidden 64, 1 layer) built in <out>/cache, {REDUCED_STEPS} steps, "
        f"{REDUCED_PROMPTS} prompts, {REDUCED_ROUNDS} rounds: a smoke run for the test suite",
    )
    return parser


def overrides(args: argparse.Namespace, max_staleness: int, forced: dict[str, int] | None = None) -> list[str]:
    """Benchmark settings, then --reduced, --steps, --prompts-per-step, the user's --set; the forced lengths
    (``forced``: agent -> max_new_tokens) and the mode last."""
    steps = args.steps if args.steps is not None else (REDUCED_STEPS if args.reduced else 20)
    prompts = (
        args.prompts_per_step if args.prompts_per_step is not None else (REDUCED_PROMPTS if args.reduced else None)
    )
    out = [*BASE, *(REDUCED if args.reduced else []), f"stages.stage2_steps={steps}"]
    if prompts is not None:
        out.append(f"rollout.prompts_per_step={prompts}")
    lengths = [f"agents.{agent}.generation.min_new_tokens={n}" for agent, n in (forced or {}).items()]
    return [*out, *args.overrides, *lengths, f"runtime.max_staleness={max_staleness}"]


def mode_configs(args: argparse.Namespace) -> dict[str, Any]:
    """The two runs' configs; unless ``--free-lengths``, every turn forced to its agent's ``max_new_tokens``."""
    from waltz_ray.config import load_config

    forced: dict[str, int] | None = None
    if not args.free_lengths:
        probe = load_config(args.config, overrides(args, 0))
        forced = {a: getattr(probe.agents, a).generation.max_new_tokens for a in AGENT_NAMES}
    return {name: load_config(args.config, overrides(args, staleness, forced)) for name, staleness in MODES.items()}


def round_order(index: int) -> tuple[str, ...]:
    """Round 0 (the first) runs sync first, round 1 async first, and so on."""
    return ("sync", "async") if index % 2 == 0 else ("async", "sync")


class StepSpans:
    """A trainer hook recording each training step's (start, end) on ``perf_counter``."""

    def __init__(self) -> None:
        self.spans: list[tuple[float, float]] = []
        self._start = 0.0

    def __call__(self, trainer: Any, step: int, when: str) -> None:
        if when == "before":
            self._start = time.perf_counter()
        elif when == "after":
            self.spans.append((self._start, time.perf_counter()))


def step_rows(out: Path) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r for r in rows if "queue/capacity" in r]


def run_once(config: Any, out: Path) -> dict[str, Any]:
    if (out / "metrics.jsonl").exists():
        raise SystemExit(f"{out}/metrics.jsonl exists (metrics would be appended): pass an empty --out")
    from waltz_ray.runtime.driver import ray_trainer

    timing = StepSpans()
    ray_trainer(config, out, hooks=[timing]).run()
    spans = timing.spans
    rows = step_rows(out)
    if len(spans) != len(rows) or not spans:
        raise RuntimeError(f"{out}: {len(spans)} timed steps but {len(rows)} step rows in metrics.jsonl")
    totals: dict[str, float] = {}
    tokens = {a: sum(float(r.get(f"queue/record_tokens_{a}", 0.0)) for r in rows) for a in AGENT_NAMES}
    for row in rows:
        for key, value in row.items():
            if key.startswith("time/") and isinstance(value, (int, float)):
                totals[key[5:]] = totals.get(key[5:], 0.0) + float(value)
    return {
        "wall_s": spans[-1][1] - spans[0][0],
        "step_s": [end - start for start, end in spans],
        "steps": len(rows),
        "stage_totals_s": totals,
        "tokens": tokens,
        "total_tokens": sum(tokens.values()),
        "dropped_stale": max(float(r.get("queue/dropped_stale", 0.0)) for r in rows),
        "max_staleness_seen": max(
            float(r.get(f"staleness/{a}/max", 0.0)) for r in rows for a in ("conversation", "feedback")
        ),
    }


def rollout_stages() -> tuple[str, ...]:
    """The stages the rollout side times (``trainer.metrics.ROLLOUT_STAGES``; imported late, as every package
    import here, so that ``main`` can put the checkout on the path first)."""
    from waltz_ray.trainer.metrics import ROLLOUT_STAGES

    return ROLLOUT_STAGES


def split_sides(totals: dict[str, float]) -> tuple[float, float]:
    """(generation side, learner side) seconds from a run's summed per-stage times. The learner side is the step's
    wall time less its wait for the rollout (``step_wall - rollout_wait``) where the run logged both: with
    ``runtime.concurrent_updates`` (the default) the two agents' learner stages overlap each other, so their sum
    would overstate it; otherwise the sum of the learner stages."""
    stages = rollout_stages()
    gen = sum(v for k, v in totals.items() if k in stages)
    if "step_wall" in totals and "rollout_wait" in totals:
        return gen, totals["step_wall"] - totals["rollout_wait"]
    learn = sum(v for k, v in totals.items() if k not in stages and k not in NOT_A_STAGE)
    return gen, learn


def theoretical_limit(gen: float, learn: float) -> float:
    return (gen + learn) / max(gen, learn) if max(gen, learn) > 0 else 1.0


def table(results: dict[str, dict[str, Any]], steps: int, prompts: int, gen: float, learn: float) -> str:
    """One round's runs (the last round's, printed): walls, per-stage means, the sync run's sides."""
    lines = [
        f"overlap benchmark: {steps} steps x {prompts} prompts (stage 2), one Ray session, same model and seed",
        f"{'run':<8}{'max_staleness':>14}{'loop wall s':>13}{'s/step':>10}{'tokens':>9}{'dropped stale':>15}"
        f"{'lag seen':>10}",
    ]
    for name, res in results.items():
        lines.append(
            f"{name:<8}{MODES[name]:>14}{res['wall_s']:>13.2f}{res['wall_s'] / res['steps']:>10.3f}"
            f"{res['total_tokens']:>9.0f}{res['dropped_stale']:>15g}{res['max_staleness_seen']:>10g}"
        )
    keys = sorted({k for res in results.values() for k in res["stage_totals_s"]})
    stages = rollout_stages()
    keys = [k for k in stages if k in keys] + [k for k in keys if k not in stages]
    lines += ["", f"{'per-stage mean s/step (time/*)':<32}" + "".join(f"{name:>10}" for name in results)]
    for key in keys:
        side = "gen" if key in stages else ("-" if key in NOT_A_STAGE else "learn")
        cells = "".join(f"{res['stage_totals_s'].get(key, 0.0) / res['steps']:>10.3f}" for res in results.values())
        lines.append(f"  {key + ' [' + side + ']':<30}{cells}")
    sync = results["sync"]
    other = sync["wall_s"] - gen - learn
    lines += [
        "",
        f"sync run: generation side {gen:.2f} s, learner side {learn:.2f} s, "
        f"other (driver, transfers) {other:.2f} s over {sync['steps']} steps",
    ]
    return "\n".join(lines)


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    rounds = args.rounds if args.rounds is not None else (REDUCED_ROUNDS if args.reduced else 3)
    if rounds < 1:
        raise SystemExit("--rounds must be at least 1")
    with tempfile.TemporaryDirectory(prefix="waltz-overlap-") as tmp:
        work = Path(args.out) if args.out else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        if args.reduced:  # set before Ray starts so the workers see it too
            os.environ["WALTZ_RAY_CACHE"] = str(work / "cache")
        from waltz_ray.runtime.driver import ray_session
        from waltz_ray.worlds.tiny.build import init_tiny

        configs = mode_configs(args)
        sync_cfg = configs["sync"]
        if any(getattr(sync_cfg.agents, a).model_path.startswith("tiny://") for a in AGENT_NAMES):
            init_tiny(sync_cfg)  # build (or reuse) once, outside the timed region; every run shares it
        per_round: list[dict[str, Any]] = []
        with ray_session():
            for r in range(rounds):
                order = round_order(r)
                runs: dict[str, dict[str, Any]] = {}
                for name in order:
                    before = load()
                    res = run_once(configs[name], work / f"round{r}" / name)
                    res["load_before"], res["load_after"] = before, load()
                    runs[name] = res
                    print(
                        f"round {r} {name}: wall {res['wall_s']:.3f} s, tokens {res['total_tokens']:.0f}, "
                        f"load {' '.join(map(str, before))} -> {' '.join(map(str, res['load_after']))}",
                        flush=True,
                    )
                gen, learn = split_sides(runs["sync"]["stage_totals_s"])
                per_round.append(
                    {
                        "round": r,
                        "order": list(order),
                        "runs": {name: runs[name] for name in MODES},
                        "generation_side_s": gen,
                        "learner_side_s": learn,
                        "theoretical_limit": theoretical_limit(gen, learn),
                        "ratio": runs["sync"]["wall_s"] / runs["async"]["wall_s"],
                    }
                )
        # printed after the Ray session ends, so no forwarded worker log can follow the last line

        def median(values: Sequence[float]) -> float:
            return float(statistics.median(values))

        ratios = [row["ratio"] for row in per_round]
        walls = {name: median([row["runs"][name]["wall_s"] for row in per_round]) for name in MODES}
        tokens = {name: median([row["runs"][name]["total_tokens"] for row in per_round]) for name in MODES}
        gen = median([row["generation_side_s"] for row in per_round])
        learn = median([row["learner_side_s"] for row in per_round])
        limit = median([row["theoretical_limit"] for row in per_round])
        ratio = median(ratios)
        loads = [
            x
            for row in per_round
            for res in row["runs"].values()
            for x in (res["load_before"][0], res["load_after"][0])
        ]
        summary = {
            "steps": sync_cfg.stages.stage2_steps,
            "prompts_per_step": sync_cfg.rollout.prompts_per_step,
            "rounds": rounds,
            "forced_lengths": not args.free_lengths,
            "max_new_tokens": {a: getattr(sync_cfg.agents, a).generation.max_new_tokens for a in AGENT_NAMES},
            "min_new_tokens": {a: getattr(sync_cfg.agents, a).generation.min_new_tokens for a in AGENT_NAMES},
            "cpus": os.cpu_count(),
            "load_1min_min_max": [min(loads), max(loads)],
            "wall_s_median": walls,
            "tokens_median": tokens,
            "generation_side_s": gen,
            "learner_side_s": learn,
            "theoretical_limit": limit,
            "round_ratios": ratios,
            "overlap_ratio": ratio,
            "per_round": per_round,
        }
        (work / "overlap.json").write_text(json.dumps(summary, indent=2, sort_keys=True))
        last = per_round[-1]
        print(
            table(
                last["runs"],
                sync_cfg.stages.stage2_steps,
                sync_cfg.rollout.prompts_per_step,
                last["generation_side_s"],
                last["learner_side_s"],
            )
        )
        print(f"(table: round {last['round']}; below: medians over {rounds} rounds)")
        for row in per_round:
            print(f"round_ratio={row['ratio']:.3f} (round {row['round']}, {' first, '.join(row['order'])} second)")
        print(f"sync_wall_s={walls['sync']:.3f}")
        print(f"async_wall_s={walls['async']:.3f}")
        print(f"tokens_sync={tokens['sync']:.0f}")
        print(f"tokens_async={tokens['async']:.0f}")
        print(f"load_average={min(loads):.2f}..{max(loads):.2f} (1-min, before/after each run) cpus={os.cpu_count()}")
        print(f"theoretical_limit={limit:.3f}")
        print(f"overlap_ratio={ratio:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))  # run from a checkout without installing
    sys.exit(main())
