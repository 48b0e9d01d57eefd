"""Throughput of ``detect_refusal`` on one core: completions classified per second.

    taskset -c 1 python scripts/judge_speed.py [--data FILE.jsonl] [--repeat 20] [--main-commit 3d4e3d4]

Texts: the JailbreakBench judge-comparison responses (300 real-model completions) plus, when present, the dev set's
responses; each pass classifies every text once and the best of ``--repeat`` passes is reported, by wall-clock
time (``per_second``) and by this thread's CPU time (``per_cpu_second``).
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

from waltz_ray.engines.judges.refusal import detect_refusal

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
DEVSET = Path(__file__).resolve().parents[1] / ".cache" / "judge" / "refusal_devset.jsonl"  # judge_devset_build.py


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(DEVSET))
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--main-commit", help="also time main's detect_refusal from this commit (git show), same texts")
    args = ap.parse_args()
    texts: list[str] = []
    jbb = DATA / "jailbreakbench" / "judge-comparison.mac_roman_lossy.csv"
    if jbb.is_file():
        with jbb.open(encoding="mac_roman", newline="") as f:
            texts += [row["target_response"] for row in csv.DictReader(f)]
    if Path(args.data).is_file():
        with open(args.data, encoding="utf-8") as f:
            texts += [json.loads(line)["response"] for line in f if line.strip()]
    detectors = {"detect_refusal": detect_refusal}
    if args.main_commit:
        import sys

        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from judge_tables import load_main

        main_fn = load_main(args.main_commit)
        if main_fn is not None:
            detectors[f"main@{args.main_commit}"] = main_fn
    out: dict[str, object] = {"texts": len(texts)}
    # Each repeat times every detector once, in turn, so a change in the machine's load hits all of them alike. Both
    # wall-clock time and this thread's CPU time are kept (best pass each): on a shared, loaded machine the CPU time
    # is the fairer measure, since it leaves out the time the process waits for the core.
    best = {name: [float("inf"), float("inf")] for name in detectors}
    for _ in range(args.repeat):
        for name, fn in detectors.items():
            wall, cpu = time.perf_counter(), time.thread_time()
            for text in texts:
                fn(text)
            best[name][0] = min(best[name][0], time.perf_counter() - wall)
            best[name][1] = min(best[name][1], time.thread_time() - cpu)
    for name, (wall, cpu) in best.items():
        out[name] = {"per_second": round(len(texts) / wall), "per_cpu_second": round(len(texts) / cpu)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
