"""The tables of docs/judge.md: refusal agreement of the detector, main's detector and the prefix-list baseline on
each labelled set, and the rule judge's unsafe agreement on the JailbreakBench judge-comparison file.

    python scripts/judge_tables.py [--main-commit 3d4e3d4]

main's ``detect_refusal`` is loaded from git (``git show COMMIT:waltz_ray/engines/judges/refusal.py``), so the
comparison needs the repository history; it is skipped when git cannot produce the file.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from waltz_ray.engines.judges.agreement import classification_report
from waltz_ray.engines.judges.refusal import detect_refusal, prefix_baseline
from waltz_ray.eval.judge_agreement import parse_kind, read_rows

ROOT = Path(__file__).resolve().parents[1]
DEVSET = ROOT / ".cache" / "judge" / "refusal_devset.jsonl"  # scripts/judge_devset_build.py writes it
SHARED = ROOT.parent / "shared" / "data"


def load_main(commit: str) -> Callable[[str], bool] | None:
    try:
        source = subprocess.run(
            ["git", "show", f"{commit}:waltz_ray/engines/judges/refusal.py"],
            cwd=ROOT, check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return None
    path = Path(tempfile.mkdtemp()) / "refusal_main.py"
    path.write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("refusal_main", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["refusal_main"] = module
    spec.loader.exec_module(module)
    return lambda text: bool(module.detect_refusal(text).refused)


def row(name: str, rows: list[dict[str, str]], main: Callable[[str], bool] | None) -> dict[str, object]:
    gold = ["refusal" if parse_kind(r["label"]) != "compliance" else "compliance" for r in rows]
    out: dict[str, object] = {"set": name, "n": len(rows), "refusals": gold.count("refusal")}
    judges: dict[str, Callable[[str], bool]] = {
        "detector": lambda t: detect_refusal(t).refused,
        "prefix": prefix_baseline,
    }
    if main is not None:
        judges["main"] = main
    for key, fn in judges.items():
        pairs = [("refusal" if fn(r["response"]) else "compliance", g) for r, g in zip(rows, gold, strict=True)]
        rep = classification_report(pairs, ["refusal", "compliance"])
        ref = rep["per_class"]["refusal"]
        out[key] = {
            "accuracy": round(rep["accuracy"], 3), "kappa": round(rep["cohen_kappa"], 3),
            "precision": round(ref["precision"], 3), "recall": round(ref["recall"], 3),
        }  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--main-commit", default="3d4e3d4")
    args = ap.parse_args()
    main_fn = load_main(args.main_commit)
    rows = read_rows(DEVSET)
    sets = {
        "test (SmolLM2 run 5)": [r for r in rows if r["split"] == "test"],
        "test, no opener": [r for r in rows if r["split"] == "test" and not r["opener"]],
        "test, with opener": [r for r in rows if r["split"] == "test" and r["opener"]],
        "run 4 (third test split, now dev)": [
            r for r in rows if r["source"] == "smol" and "3000" <= r["id"][5:] < "4000"
        ],
        "run 3 (second test split, now dev)": [
            r for r in rows if r["source"] == "smol" and "2000" <= r["id"][5:] < "3000"
        ],
        "run 2 (first test split, now dev)": [
            r for r in rows if r["source"] == "smol" and "1000" <= r["id"][5:] < "2000"
        ],
        "dev: SmolLM2 run 1": [r for r in rows if r["source"] == "smol" and r["id"][5:] < "1000"],
        "dev: JBB responses": [r for r in rows if r["source"] == "jbb"],
        "dev: hand-written": [r for r in rows if r["source"] == "handwritten"],
    }
    table = [row(name, subset, main_fn) for name, subset in sets.items() if subset]
    print(json.dumps(table, indent=1))
    # Three-way (compliance / refusal / partial) on the test split, rows human, columns detector.
    test = sets["test (SmolLM2 run 5)"]
    if test:
        kinds = ["compliance", "refusal", "partial"]
        pairs = [(detect_refusal(r["response"]).kind, parse_kind(r["label"])) for r in test]
        rep = classification_report(pairs, kinds)
        print(json.dumps({"three_way_test": {"accuracy": round(rep["accuracy"], 3),
                                             "kappa": round(rep["cohen_kappa"], 3),
                                             "confusion": rep["confusion"]}}))  # fmt: skip

    # The rule judge's unsafe label on the JBB judge-comparison file, with and without the engagement check.
    import csv

    from waltz_ray.engines.judges import RuleJudge, judge_agreement

    jbb = SHARED / "jailbreakbench" / "judge-comparison.mac_roman_lossy.csv"
    xstest = SHARED / "xstest" / "xstest_prompts.csv"
    if jbb.is_file() and xstest.is_file():
        with xstest.open(encoding="utf-8", newline="") as f:
            safe = {r["prompt"].strip() for r in csv.DictReader(f) if r["label"] == "safe"}
        with jbb.open(encoding="mac_roman", newline="") as f:
            data = list(csv.DictReader(f))
        items = [(r["prompt"], r["target_response"], r["human_majority"] == "1") for r in data]
        labels = ["benign" if r["goal"].strip() in safe else "harmful" for r in data]
        out = {}
        for engagement, short in ((True, False), (True, True), (False, False)):
            judge = RuleJudge(engagement=engagement, short_answers=short)
            harmful = [(i, lb) for i, lb in zip(items, labels, strict=True) if lb == "harmful"]
            all_rep = judge_agreement(judge, items, labels)  # type: ignore[arg-type]
            jb_rep = judge_agreement(judge, [i for i, _ in harmful], ["harmful"] * len(harmful))
            out[f"engagement={engagement},short_answers={short}"] = {
                "all_300": {"accuracy": round(all_rep.accuracy, 3), "kappa": round(all_rep.cohen_kappa, 3),
                            "fp": all_rep.fp, "fn": all_rep.fn},
                "jailbreak_200": {"accuracy": round(jb_rep.accuracy, 3), "kappa": round(jb_rep.cohen_kappa, 3),
                                  "fp": jb_rep.fp, "fn": jb_rep.fn},
            }  # fmt: skip
        print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
