"""Peak resident memory of a finished run, per actor, from the run's own metrics.

Every Ray run logs ``memory/<pool>[i]_peak_rss_mb`` for each actor and ``memory/driver_peak_rss_mb`` /
``memory/rollout_peak_rss_mb`` (``runtime/memory.py``: the process's peak RSS, ``ru_maxrss``). This prints, per
actor, the largest value any step logged, and their sum (an upper bound on the run's footprint: the peaks need not
coincide), as a markdown table.

    python benchmarks/memory.py runs/tiny
    python benchmarks/memory.py runs/seeds_async/seed0 runs/smol_mem --json runs/memory.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

PREFIX, SUFFIX = "memory/", "_peak_rss_mb"


def peaks(run: Path) -> dict[str, float]:
    """Actor label -> the largest peak RSS (MB) any step of ``run/metrics.jsonl`` logged for it."""
    path = run / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not a run directory (no metrics.jsonl)")
    out: dict[str, float] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{number}: not JSON ({exc})") from None
        for key, value in row.items():
            if key.startswith(PREFIX) and key.endswith(SUFFIX) and isinstance(value, (int, float)):
                label = key[len(PREFIX) : -len(SUFFIX)]
                out[label] = max(out.get(label, 0.0), float(value))
    if not out:
        raise ValueError(f"{path}: no {PREFIX}*{SUFFIX} metrics (an inline run, or one from before they existed)")
    return dict(sorted(out.items()))


def table(runs: dict[str, dict[str, float]]) -> str:
    labels = sorted({label for p in runs.values() for label in p})
    lines = ["| actor | " + " | ".join(runs) + " |", "|---|" + "---:|" * len(runs)]
    for label in labels:
        cells = [f"{p[label]:,.0f}" if label in p else "–" for p in runs.values()]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("| **sum of peaks** | " + " | ".join(f"**{sum(p.values()):,.0f}**" for p in runs.values()) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="run directories (each with metrics.jsonl)")
    parser.add_argument("--json", default=None, help="also write {run: {actor: MB}} here")
    args = parser.parse_args(argv)
    try:
        found = {run: peaks(Path(run)) for run in args.runs}
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(table(found))
    if args.json:
        Path(args.json).write_text(json.dumps(found, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
