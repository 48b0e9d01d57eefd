"""The refusal detector's learned layer (waltz_ray/engines/judges/learned.py): its arithmetic by hand, the shipped
weights' manifest, and that retraining with scripts/judge_train.py reproduces the shipped weights."""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from waltz_ray.engines.judges import detect_refusal
from waltz_ray.engines.judges.learned import MARGIN, WEIGHTS, decide, load_weights, probability, score, vectorise
from waltz_ray.engines.judges.refusal import SCAN_CHARS, RefusalMatch, detect_refusal_rules, normalise

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))


def test_vectorise_and_score_by_hand() -> None:
    fixed = ["bias", "k:refusal"]
    regions = [("o", ["o:a", "o:b", "o:a", "o:c"]), ("e", [])]
    # Four n-grams share 1/sqrt(4) = 0.5 each; "o:a" occurs twice.
    assert vectorise(fixed, regions) == {"bias": 1.0, "k:refusal": 1.0, "o:a": 1.0, "o:b": 0.5, "o:c": 0.5}
    weights = {"bias": -1.0, "k:refusal": 2.0, "o:a": 0.4, "o:c": -0.2}
    # -1 + 2 + (0.4 + 0 + 0.4 - 0.2) / 2 = 1.3
    assert score(fixed, regions, weights) == pytest.approx(1.3)


def test_decide_needs_confidence_to_overturn_the_rules() -> None:
    assert MARGIN == 0.2
    assert decide(0.31, rules_refused=True) and not decide(0.29, rules_refused=True)
    assert decide(0.70, rules_refused=False) and not decide(0.69, rules_refused=False)


def test_probability_is_the_logistic_of_the_score() -> None:
    norm = normalise("I can't help with that.")
    match = RefusalMatch(refused=True, rule="direct.cant")
    p = probability(norm, match, {"bias": 0.0, "k:refusal": math.log(3)})
    assert p == pytest.approx(0.75)


def test_fit_one_step_by_hand() -> None:
    from judge_train import fit

    np = pytest.importorskip("numpy")
    # Two rows; at w = 0 every p is 0.5. Gradient: bias (-0.5 + 0.5) / 2 = 0, a -0.5 / 2, b 0.5 / 2.
    # Step 1/L with L = max |x|^2 / 4 = 2 / 4, so w = -2 * grad.
    w = fit([{"bias": 1.0, "a": 1.0}, {"bias": 1.0, "b": 1.0}], np.array([1.0, 0.0]), l2=0.0, steps=1)
    assert w == {"a": 0.5, "b": -0.5, "bias": 0.0}


def test_metrics_by_hand() -> None:
    from judge_train import metrics

    np = pytest.importorskip("numpy")
    pred, gold = np.array([1, 1, 0, 0, 1]), np.array([1, 0, 0, 1, 1])
    # tp 2, fp 1, fn 1: accuracy 3/5, P 2/3, R 2/3; p_e = 0.6 * 0.6 + 0.4 * 0.4 = 0.52, kappa = 0.08 / 0.48
    assert metrics(pred, gold) == {"n": 5, "accuracy": 0.6, "kappa": 0.167, "precision": 0.667, "recall": 0.667}


def test_shipped_weights_match_their_manifest() -> None:
    data = json.loads(WEIGHTS.read_text(encoding="utf-8"))
    body = json.dumps(data["weights"], sort_keys=True, separators=(",", ":"))
    assert hashlib.sha256(body.encode()).hexdigest() == data["manifest"]["weights_sha256"]
    assert data["manifest"]["features"] == len(data["weights"])
    assert WEIGHTS.stat().st_size < 300_000
    # Never trained on the test split (SmolLM2 run 5, ids from 4000).
    assert "smol run 5" not in data["manifest"]["sources"]


def test_detector_keeps_the_rules_name_unless_the_layer_overturns_them() -> None:
    for text in ("I'm sorry, but I can't help with that request.", "Sure, here is a recipe for pancakes: mix ..."):
        combined, rules = detect_refusal(text), detect_refusal_rules(text)
        assert combined == rules or (combined.rule or "").startswith("learned.")
    assert isinstance(detect_refusal("No.").refused, bool)


def test_retraining_reproduces_the_shipped_weights(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "weights.json"
    subprocess.run([sys.executable, "scripts/judge_train.py", "--out", str(out)], cwd=ROOT, check=True,
                   capture_output=True)  # fmt: skip
    shipped = json.loads(WEIGHTS.read_text(encoding="utf-8"))
    again = json.loads(out.read_text(encoding="utf-8"))
    assert again["manifest"]["data_sha256"] == shipped["manifest"]["data_sha256"]
    assert again["weights"].keys() == shipped["weights"].keys()
    # Same arithmetic, same order: equal to the printed 6 decimals (1e-5 leaves room for another libm's last bit).
    assert max(abs(again["weights"][k] - shipped["weights"][k]) for k in shipped["weights"]) <= 1e-5
    assert load_weights() == {k: float(v) for k, v in shipped["weights"].items()}
    # And the same verdict on every development row with either set of weights.
    from judge_train import load_rows

    retrained = {k: float(v) for k, v in again["weights"].items()}
    for row in load_rows():
        if row["split"] == "dev":
            norm = normalise(row["response"][: SCAN_CHARS + 200])
            match = detect_refusal_rules(row["response"])
            assert decide(probability(norm, match), match.refused) == decide(
                probability(norm, match, retrained), match.refused
            ), row["id"]
