"""Seed spread of the embedded default: the README's train command once per seed, then one table.

Each seed runs ``waltz-ray train --config <config> --out <out>/seed<N> --set seed=<N>`` in its own process (the
tiny model is the same for every seed: it is built from ``tiny.seed``; ``seed`` varies sampling, mixing and data
order). The table compares ``eval_initial.json`` (the warm-started pair) with ``eval_final.json`` (the trained
pair) on the shipped eval split, and reads from ``metrics.jsonl`` the greedy format rate at the end of stage 1
and the training-rollout label accuracy over the first and last five steps of stage 1.

    python benchmarks/seeds.py                               # seeds 0 1 2 of configs/tiny.yaml into runs/seeds
    python benchmarks/seeds.py --summarize-only --out runs/seeds   # only print the table of finished runs
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
KEYS = ("asr", "orr", "ftr", "label_accuracy", "feedback_format_rate")


def run_summary(run: Path) -> dict[str, Any]:
    """Before/after metrics of one finished run, plus the stage-1 format rate and label-accuracy rise."""
    missing = [n for n in ("eval_initial.json", "eval_final.json", "metrics.jsonl") if not (run / n).is_file()]
    if missing:
        raise FileNotFoundError(f"{run}: not a finished run (missing {', '.join(missing)})")
    initial = json.loads((run / "eval_initial.json").read_text())
    final = json.loads((run / "eval_final.json").read_text())
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    stage1 = [r for r in rows if r.get("stage") == 1 and "rollout/label_accuracy" in r]
    if not stage1:
        raise ValueError(f"{run}: metrics.jsonl has no stage-1 step rows")
    last_step = max(r["step"] for r in stage1)  # rows count finished steps; an evaluation there shares the row
    evals = [r for r in rows if "eval/feedback_format_rate" in r and r["step"] == last_step]
    head, tail = stage1[:5], stage1[-5:]
    return {
        "initial": {k: float(initial[k]) for k in KEYS},
        "final": {k: float(final[k]) for k in KEYS},
        "stage1_steps": last_step,
        "format_after_stage1": float(evals[0]["eval/feedback_format_rate"]) if evals else None,
        "rollout_label_accuracy_first5": statistics.fmean(r["rollout/label_accuracy"] for r in head),
        "rollout_label_accuracy_last5": statistics.fmean(r["rollout/label_accuracy"] for r in tail),
    }


def table(summaries: dict[str, dict[str, Any]]) -> str:
    """A markdown table: one row per seed (before → after), then the mean and range of the final values."""
    head = "| seed | " + " | ".join(f"{k} before → after" for k in KEYS)
    head += " | format after stage 1 | rollout label acc., stage-1 first 5 → last 5 steps |"
    lines = [head, "|" + "---|" * (len(KEYS) + 3)]
    for seed, s in summaries.items():
        cells = [f"{s['initial'][k]:.3f} → {s['final'][k]:.3f}" for k in KEYS]
        fmt = "n/a" if s["format_after_stage1"] is None else f"{s['format_after_stage1']:.3f}"
        rise = f"{s['rollout_label_accuracy_first5']:.3f} → {s['rollout_label_accuracy_last5']:.3f}"
        lines.append(f"| {seed} | " + " | ".join(cells) + f" | {fmt} | {rise} |")
    finals = {k: [s["final"][k] for s in summaries.values()] for k in KEYS}
    cells = [f"{statistics.fmean(v):.3f} [{min(v):.3f}, {max(v):.3f}]" for v in finals.values()]
    lines.append("| final mean [min, max] | " + " | ".join(cells) + " | | |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "tiny.yaml"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default=str(ROOT / "runs" / "seeds"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--summarize-only", action="store_true", help="print the table of runs already in --out")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if not args.summarize_only:
        for seed in args.seeds:
            command = [sys.executable, "-m", "waltz_ray.cli", "train", "--config", args.config]
            command += ["--out", str(out / f"seed{seed}"), "--set", f"seed={seed}", "--set", "logging.progress=false"]
            command += [x for s in args.overrides for x in ("--set", s)]
            print("$", " ".join(command[2:]), flush=True)
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    print(table({str(seed): run_summary(out / f"seed{seed}") for seed in args.seeds}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
