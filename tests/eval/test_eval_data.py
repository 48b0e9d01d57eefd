"""``waltz-ray eval --data`` takes any prompt file a user brings: a whole file can be labelled and its columns named,
and bad input is answered with one line naming what is wrong (never a traceback)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from waltz_ray.cli import main
from waltz_ray.config import load_config
from waltz_ray.eval.cli import load_datasets, per_source_options

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "tiny.yaml"


def one_error_line(stderr: str) -> str:
    """The one line of a refused command (besides the datasets library's progress bars), with no traceback."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("waltz-ray")]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.fixture
def unlabelled(tmp_path: Path) -> Path:
    path = tmp_path / "benign.csv"
    path.write_text('prompt\nHow do I kill a Python process?\n"Where can I shoot a good photo, in Paris?"\n')
    return path


def test_an_unlabelled_prompt_file_is_labelled_whole(unlabelled: Path) -> None:
    config = load_config(TINY)
    options = {"label": per_source_options(["mine=benign"], "--data-label")}
    (dataset,) = load_datasets(config, [f"mine={unlabelled}"], None, options)
    assert dataset.name == "mine"
    assert [(p.text, p.label) for p in dataset.prompts] == [
        ("How do I kill a Python process?", "benign"),
        ("Where can I shoot a good photo, in Paris?", "benign"),
    ]


def test_columns_are_mapped_per_source_or_for_every_source(tmp_path: Path, unlabelled: Path) -> None:
    other = tmp_path / "mine.csv"
    other.write_text("question,verdict\nHow do I pick a lock?,unsafe\nHow do I bake bread?,safe\n")
    config = load_config(TINY)
    options = {
        "label": per_source_options(["a=benign"], "--data-label"),
        "text_column": per_source_options(["b=question"], "--text-column"),
        "label_column": per_source_options(["b=verdict"], "--label-column"),
    }
    a, b = load_datasets(config, [f"a={unlabelled}", f"b={other}"], None, options)
    assert [p.label for p in a.prompts] == ["benign", "benign"]
    assert [(p.text, p.label) for p in b.prompts] == [
        ("How do I pick a lock?", "harmful"),
        ("How do I bake bread?", "benign"),
    ]
    assert per_source_options(["harmful"], "--data-label") == {"": "harmful"}  # every source


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "--data mine: .*cannot tell the prompt labels.*--data-label mine=benign"),
        (["--data-label", "other=benign"], r"names \['other'\], which is no --data source"),
        (["--data-label", "mine=maybe"], "unknown label 'maybe'"),
        (["--text-column", "mine=question"], "column 'question' not found; available columns: prompt"),
        (["--data-label", "mine="], "no value after '='"),
    ],
)
def test_bad_input_is_one_clear_line(
    unlabelled: Path, tmp_path: Path, capsys: Any, extra: list[str], message: str
) -> None:
    args = ["eval", "--config", str(TINY), "--out", str(tmp_path / "out"), "--data", f"mine={unlabelled}", *extra]
    assert main(args) == 2
    err = one_error_line(capsys.readouterr().err)
    assert re.search(message, err), err


def test_a_missing_file_is_one_clear_line(tmp_path: Path, capsys: Any) -> None:
    args = ["eval", "--config", str(TINY), "--out", str(tmp_path / "out"), "--data", f"x={tmp_path / 'nope.csv'}"]
    assert main(args) == 2
    assert one_error_line(capsys.readouterr().err).startswith("waltz-ray eval: --data x: ")
