"""Train the refusal detector's learned layer (``waltz_ray/engines/judges/learned.py``) on the development rows.

    python scripts/judge_train.py                     # writes waltz_ray/engines/judges/data/refusal_lr.json
    python scripts/judge_train.py --report            # also: 5-fold CV, leave-one-source-out, leave-one-run-out
    python scripts/judge_train.py --out /tmp/w.json   # retrain elsewhere (tests/engines/test_judge_learned.py)

Data: the ``dev`` rows of the labelled set that scripts/judge_devset_build.py assembles (SmolLM2 runs 1-4, the
JailbreakBench responses with this project's refusal labels, the hand-written rows); the ``test`` split (run 5) is
never read. Target: binary refusal (refusal or partial = 1). Model: logistic regression, mean log-loss plus
``l2/2 * |w|^2`` (the bias is not penalised), fitted by full-batch Nesterov gradient descent for a fixed number of
steps from zero, so the result is a pure function of the data (no sampling; ``SEED`` only orders the CV folds).
numpy is needed here only; inference is plain Python.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from judge_devset_build import SMOL_RUNS, build

from waltz_ray.engines.judges.learned import MARGIN, MIN_DF, WEIGHTS, decide, features, vectorise
from waltz_ray.engines.judges.refusal import SCAN_CHARS, _rules, normalise

SEED = 16
L2 = 1e-2
STEPS = 1500
COMMAND = "python scripts/judge_train.py"


def load_rows() -> list[dict[str, str]]:
    """The labelled set as judge_devset_build writes it (built into a temporary file: no cache needed)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "devset.jsonl"
        build([str(p) for p in SMOL_RUNS if p.is_file()], 1.0, out, quiet=True)
        return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines() if line.strip()]


def target(row: dict[str, str]) -> int:
    return 0 if row["label"] == "compliance" else 1


def row_features(rows: list[dict[str, str]]) -> list[dict[str, float]]:
    out = []
    for row in rows:
        norm = normalise(row["response"][: SCAN_CHARS + 200])
        fixed, regions = features(norm, _rules(norm))
        out.append(vectorise(fixed, regions))
    return out


def vocabulary(feats: list[dict[str, float]]) -> list[str]:
    """Fixed features always; n-grams seen in at least MIN_DF rows. Sorted, so the order is reproducible."""
    df = Counter(name for f in feats for name in f)
    return sorted(n for n, c in df.items() if c >= MIN_DF or not n.startswith(("o:", "s:", "e:")))


def fit(feats: list[dict[str, float]], y: np.ndarray, l2: float = L2, steps: int = STEPS) -> dict[str, float]:
    """Weights (feature -> weight) of the L2 logistic regression on these rows."""
    vocab = vocabulary(feats)
    index = {n: i for i, n in enumerate(vocab)}
    rows, cols, vals = [], [], []
    for r, f in enumerate(feats):
        for name, v in f.items():
            if name in index:
                rows.append(r)
                cols.append(index[name])
                vals.append(v)
    R, C, V = np.array(rows), np.array(cols), np.array(vals, dtype=np.float64)
    n, d = len(feats), len(vocab)
    penalty = np.full(d, l2)
    penalty[index["bias"]] = 0.0
    # Step 1/L with L = max row |x|^2 / 4 + l2 (the log-loss gradient's Lipschitz bound).
    lipschitz = float(np.bincount(R, V * V, minlength=n).max()) / 4 + l2
    step = 1.0 / lipschitz
    w = np.zeros(d)
    prev = w.copy()
    for t in range(1, steps + 1):
        look = w + (t - 1) / (t + 2) * (w - prev)
        z = np.bincount(R, look[C] * V, minlength=n)
        p = 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))
        grad = np.bincount(C, (p - y)[R] * V, minlength=d) / n + penalty * look
        prev, w = w, look - step * grad
    return {name: round(float(w[i]), 6) for i, name in enumerate(vocab)}


def predict(weights: dict[str, float], feats: list[dict[str, float]]) -> np.ndarray:
    """The combined verdict (rules and layer, ``learned.decide``) as detect_refusal gives it."""
    z = np.array([sum(weights.get(k, 0.0) * v for k, v in f.items()) for f in feats])
    p = 1.0 / (1.0 + np.exp(-z))
    return np.array([decide(float(q), "k:compliance" not in f) for q, f in zip(p, feats, strict=True)], dtype=int)


def data_hash(rows: list[dict[str, str]]) -> str:
    h = hashlib.sha256()
    for r in rows:
        h.update(json.dumps([r["id"], r["label"], r["response"]], ensure_ascii=False).encode())
    return h.hexdigest()


def metrics(pred: np.ndarray, y: np.ndarray) -> dict[str, float]:
    tp = int(((pred == 1) & (y == 1)).sum())
    fp = int(((pred == 1) & (y == 0)).sum())
    fn = int(((pred == 0) & (y == 1)).sum())
    acc = float((pred == y).mean())
    pe = (pred.mean() * y.mean()) + ((1 - pred.mean()) * (1 - y.mean()))
    kappa = (acc - pe) / (1 - pe) if pe < 1 else 1.0
    precision = round(tp / (tp + fp), 3) if tp + fp else 0.0
    recall = round(tp / (tp + fn), 3) if tp + fn else 0.0
    return {"n": len(y), "accuracy": round(acc, 3), "kappa": round(float(kappa), 3), "precision": precision,
            "recall": recall}  # fmt: skip


def group_of(row: dict[str, str]) -> str:
    if row["source"] != "smol":
        return row["source"]
    return f"smol run {int(row['id'].split('-')[1]) // 1000 + 1}"


def report(
    rows: list[dict[str, str]], feats: list[dict[str, float]], y: np.ndarray, l2: float = L2
) -> dict[str, object]:
    """Held-out estimates on dev only: 5-fold CV (folds by a seeded permutation), leave-one-source-out, and
    leave-one-SmolLM2-run-out; each beside the rule detector alone on the same rows. "learned" is the combined
    verdict (rules overturned only past ``MARGIN``)."""
    rules = np.array([1 if f.get("k:compliance", 0) == 0 else 0 for f in feats])
    out: dict[str, object] = {}
    folds = np.random.default_rng(SEED).permutation(len(rows)) % 5
    pred = np.zeros(len(rows), dtype=int)
    for k in range(5):
        tr, te = folds != k, folds == k
        w = fit([f for f, m in zip(feats, tr, strict=True) if m], y[tr], l2)
        pred[te] = predict(w, [f for f, m in zip(feats, te, strict=True) if m])
    out["cv5"] = {"learned": metrics(pred, y), "rules": metrics(rules, y)}
    groups = [group_of(r) for r in rows]
    sources = [r["source"] for r in rows]
    for name, keys in (("leave_one_source_out", sources), ("leave_one_run_out", groups)):
        table = {}
        for g in sorted(set(keys)):
            if name == "leave_one_run_out" and not g.startswith("smol"):
                continue
            te = np.array([k == g for k in keys])
            w = fit([f for f, m in zip(feats, ~te, strict=True) if m], y[~te], l2)
            p = predict(w, [f for f, m in zip(feats, te, strict=True) if m])
            table[g] = {"learned": metrics(p, y[te]), "rules": metrics(rules[te], y[te])}
        out[name] = table
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(WEIGHTS))
    ap.add_argument("--l2", type=float, default=L2)
    ap.add_argument("--report", action="store_true", help="also print CV / leave-one-out estimates (dev rows only)")
    args = ap.parse_args()
    rows = [r for r in load_rows() if r["split"] == "dev"]
    feats = row_features(rows)
    y = np.array([target(r) for r in rows], dtype=np.float64)
    weights = fit(feats, y, args.l2)
    body = json.dumps(weights, sort_keys=True, separators=(",", ":"))
    manifest = {
        "command": COMMAND, "model": "logistic regression, L2, Nesterov gradient descent from zero",
        "l2": args.l2, "steps": STEPS, "seed": SEED, "min_df": MIN_DF, "margin": MARGIN,
        "rows": len(rows), "refusals": int(y.sum()),
        "sources": dict(sorted(Counter(group_of(r) for r in rows).items())),
        "data_sha256": data_hash(rows), "features": len(weights),
        "weights_sha256": hashlib.sha256(body.encode()).hexdigest(),
        "train_accuracy": metrics(predict(weights, feats), y.astype(int))["accuracy"],
    }  # fmt: skip
    Path(args.out).write_text(
        json.dumps({"manifest": manifest, "weights": weights}, sort_keys=True, indent=0) + "\n", encoding="utf-8"
    )
    print(json.dumps(manifest, indent=1))
    if args.report:
        print(json.dumps(report(rows, feats, y.astype(int), args.l2)))


if __name__ == "__main__":
    main()
