"""Throughput of ``detect_refusal`` on one core: completions classified per second.

    taskset -c 1 python scripts/judge_speed.py [--data FILE.jsonl] [--repeat 20] [--main-commit 3d4e3d4]

Texts: the JailbreakBench judge-comparison responses (300 real-model completions) plus, when present, the dev set's
responses; each pass classifies every text once and the best of ``--repeat`` passes is reported. ``rules_only`` is
the detector without its learned layer (``detect_refusal_rules``).
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

from waltz_ray.engines.judges.refusal import detect_refusal, detect_refusal_rules

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
    # The rules alone are timed too: the difference is the cost of the learned layer (learned.py).
    detectors = {"detect_refusal": detect_refusal, "rules_only": detect_refusal_rules}
    if args.main_commit:
        import sys

        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from judge_tables import load_main

        main_fn = load_main(args.main_commit)
        if main_fn is not None:
            detectors[f"main@{args.main_commit}"] = main_fn
    out: dict[str, object] = {"texts": len(texts)}
    # Each repeat times every detector once, in turn, so a change in the machine's load hits all of them alike.
    best = dict.fromkeys(detectors, float("inf"))
    for _ in range(args.repeat):
        for name, fn in detectors.items():
            start = time.perf_counter()
            for text in texts:
                fn(text)
            best[name] = min(best[name], time.perf_counter() - start)
    for name, seconds in best.items():
        out[name] = {"best_pass_s": round(seconds, 4), "per_second": round(len(texts) / seconds)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
