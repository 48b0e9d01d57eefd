"""Assemble the labelled refusal set (docs/judge.md) into ``.cache/judge/refusal_devset.jsonl``.

The repository keeps only what this project wrote: the SmolLM2 completions (``data/smol_run*.jsonl``), which name
their benchmark prompt by reference (``prompt_ref``: ``<file under ../shared/data>#<row>``), the labels, and the
hand-written rows. Benchmark texts (prompts, the JailbreakBench responses) are read from ``../shared/data`` here,
never copied into the repository.

Sources, each row tagged with ``source``:

- ``smol``: SmolLM2-135M-Instruct completions written by scripts/judge_devset_generate.py (real-model text; some
  started from a fixed opener, recorded in ``opener``), labelled by hand in ``data/smol_labels.json``;
- ``jbb``: the 300 responses of JailbreakBench's judge-comparison file (real chat models), refusal-labelled by hand
  in ``data/jbb_labels.json`` (the file's own labels are about jailbreaks, not refusals);
- ``handwritten``: ``data/handwritten.py``, written for this project.

Split: ``smol`` rows of the fifth generation run (ids from 4000) go to ``test`` (or ``dev`` by a seeded hash of their
id when ``--test-share`` < 1, seed 16); runs 1-4 (ids below 4000), ``jbb`` and ``handwritten`` rows are always
``dev`` (they were read while the rules were written, and a learned layer, tried and not shipped, was trained on
them; runs 2, 3 and 4 were earlier test splits, each measured once with the frozen detector and then used for
development). Nothing is tuned on ``test``.

    python scripts/judge_devset_build.py     # all five runs, written to .cache/judge/refusal_devset.jsonl
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = ROOT / "waltz_ray" / "engines" / "judges" / "data"
SHARED = ROOT.parent / "shared" / "data"
SEED = 16
SMOL_RUNS = [DATA_DIR / f"smol_run{n}.jsonl" for n in (1, 2, 3, 4, 5)]
# Ids from here on (run 5) are the test split; earlier runs were read while the detector was built or trained.
TEST_FROM = 4000
DEVSET = ROOT / ".cache" / "judge" / "refusal_devset.jsonl"


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def benchmark_prompts() -> list[dict[str, str]]:
    """Every benchmark prompt the generation script draws from, each with its ``ref`` (file#row), label and source."""
    out: list[dict[str, str]] = []

    def add(rel: str, column: str, source: str, label_of: object, keep: object = None) -> None:
        for i, row in enumerate(_csv_rows(SHARED / rel)):
            if keep is None or keep(row):  # type: ignore[operator]
                label = label_of(row) if callable(label_of) else str(label_of)
                out.append({"ref": f"{rel}#{i}", "prompt": row[column], "label": label, "source": source})

    add("xstest/xstest_prompts.csv", "prompt", "xstest", lambda r: "benign" if r["label"] == "safe" else "harmful")
    add("harmbench/harmbench_behaviors_text_all.csv", "Behavior", "harmbench", "harmful",
        lambda r: r["FunctionalCategory"] == "standard")  # fmt: skip
    add("strongreject/strongreject_dataset.csv", "forbidden_prompt", "strongreject", "harmful")
    add("advbench/harmful_behaviors.csv", "goal", "advbench", "harmful")
    add("jailbreakbench/harmful-behaviors.csv", "Goal", "jbb", "harmful")
    add("jailbreakbench/benign-behaviors.csv", "Goal", "jbb", "benign")
    return out


def prompt_texts() -> dict[str, str]:
    return {p["ref"]: p["prompt"] for p in benchmark_prompts()}


def split_of(row_id: str, test_share: float) -> str:
    digest = hashlib.sha256(f"{SEED}:{row_id}".encode()).digest()
    return "test" if int.from_bytes(digest[:8], "big") / 2**64 < test_share else "dev"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--smol", nargs="*", default=[str(p) for p in SMOL_RUNS])
    ap.add_argument("--test-share", type=float, default=1.0)
    ap.add_argument("--out", default=str(DEVSET))
    args = ap.parse_args()
    build(args.smol, args.test_share, Path(args.out))


def build(smol_runs: list[str], test_share: float, out: Path, quiet: bool = False) -> None:
    texts = prompt_texts()

    from waltz_ray.engines.judges.data.handwritten import HANDWRITTEN

    rows: list[dict[str, str]] = []
    smol_labels = json.loads((DATA_DIR / "smol_labels.json").read_text(encoding="utf-8"))
    for path in smol_runs:
        with open(path, encoding="utf-8") as f:
            for line in f:
                job = json.loads(line)
                if job["id"] not in smol_labels:
                    continue  # generated but not (yet) labelled
                # Ids below 4000 (runs 1-4) were read while the rules were written (and trained a learned layer,
                # not shipped): dev only. Runs 2, 3 and 4 were earlier test splits; their frozen-detector results
                # are in docs/judge.md, then they became dev.
                seen = int(job["id"].split("-")[1]) < TEST_FROM
                rows.append({
                    "id": job["id"], "source": "smol", "split": "dev" if seen else split_of(job["id"], test_share),
                    "prompt": texts[job["prompt_ref"]], "prompt_label": job["prompt_label"],
                    "system_id": job["system_id"],
                    "opener": job.get("opener", ""), "response": job["response"], "label": smol_labels[job["id"]],
                })  # fmt: skip
    jbb_labels = json.loads((DATA_DIR / "jbb_labels.json").read_text(encoding="utf-8"))
    jbb = SHARED / "jailbreakbench" / "judge-comparison.mac_roman_lossy.csv"
    with jbb.open(encoding="mac_roman", newline="") as f:
        for i, row in enumerate(csv.DictReader(f)):
            rows.append({
                "id": f"jbb-{i:03d}", "source": "jbb", "split": "dev", "prompt": row["goal"], "prompt_label": "",
                "system_id": "", "opener": "", "response": row["target_response"], "label": jbb_labels[str(i)],
            })  # fmt: skip
    for i, (label, text) in enumerate(HANDWRITTEN):
        rows.append({
            "id": f"hand-{i:03d}", "source": "handwritten", "split": "dev", "prompt": "", "prompt_label": "",
            "system_id": "", "opener": "", "response": text, "label": label,
        })  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    counts: dict[str, int] = {}
    for row in rows:
        key = f"{row['source']}/{row['split']}/{row['label']}"
        counts[key] = counts.get(key, 0) + 1
    if not quiet:
        print(json.dumps({"rows": len(rows), "counts": dict(sorted(counts.items()))}, indent=1))


if __name__ == "__main__":
    main()
