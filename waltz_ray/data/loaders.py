"""Prompt sources for training and evaluation: the shipped contrast set, public safety benchmarks, judge gold labels.

Every loader returns plain records (`Prompt`, `LabelledResponse`); `datasets` is imported only inside the loaders.
"""

from __future__ import annotations

import json
import logging
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from waltz_ray.data.benchmarks import (
    BENCHMARKS,
    GENERIC_LABELS,
    LABELS,
    LOCAL_FORMATS,
    BenchmarkSpec,
    benchmark_spec,
    detect_benchmark,
)
from waltz_ray.types import Prompt, PromptLabel

if TYPE_CHECKING:
    from datasets import Dataset


log = logging.getLogger(__name__)

BUILTIN_FILE = "prompts.jsonl"
BUILTIN_SPLITS = ("train", "eval")

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


class HubUnavailableError(ConnectionError):
    """A hub dataset could not be fetched (offline, unreachable, gated or missing) and no cached copy exists."""


@dataclass(frozen=True)
class LabelledResponse:
    """A (prompt, response) pair with the human verdict on whether the response is unsafe; gold data for the judge.

    ``judges`` holds the reference classifiers' verdicts shipped with the data (e.g. ``llama3_cf``), for comparison.
    """

    prompt: str
    response: str
    unsafe: bool
    goal: str = ""
    item_id: str = ""
    judges: Mapping[str, bool] = field(default_factory=dict, hash=False, compare=False)


def load_builtin_prompts(split: str | None = None) -> list[Prompt]:
    """The shipped contrast set (`waltz_ray/data/prompts.jsonl`): ``split`` is "train", "eval" or None for all."""
    if split is not None and split not in BUILTIN_SPLITS:
        raise ValueError(f"unknown builtin split {split!r}; allowed values: 'train', 'eval' or None (both)")
    text = resources.files("waltz_ray.data").joinpath(BUILTIN_FILE).read_text(encoding="utf-8")
    prompts = []
    for line in text.splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        if split is None or row["split"] == split:
            label = _as_label(row["label"], f"{BUILTIN_FILE} row {row['id']!r}")
            prompts.append(
                Prompt(text=row["text"], label=label, prompt_id=row["id"], source="builtin", category=row["category"])
            )
    return prompts


def load_prompts(
    source: str | Path,
    *,
    benchmark: str | None = None,
    split: str | None = None,
    config: str | None = None,
    limit: int | None = None,
    seed: int = 0,
    text_column: str | None = None,
    label_column: str | None = None,
    label: str | None = None,
    category_column: str | None = None,
    encoding: str | None = None,
) -> list[Prompt]:
    """Load prompts from "builtin[:train|:eval]", a local .csv/.tsv/.jsonl/.json/.parquet file, or a hub dataset id.

    ``benchmark`` picks a column mapping from `BENCHMARKS` (detected from the file or folder name, or the hub id, when
    omitted); the explicit ``*_column`` / ``label`` arguments override it. ``config`` and ``split`` select the hub
    config and split (default: the benchmark's). ``limit`` keeps a ``seed``-determined sample, in file order.
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 or None, got {limit}")
    source = str(source)
    if source == "builtin" or source.startswith("builtin:"):
        prompts = load_builtin_prompts(_builtin_split(source, split))
    else:
        spec = benchmark_spec(benchmark) if benchmark is not None else None
        table, origin, tag, spec = _load_table(source, spec, split, config, encoding)
        prompts = _to_prompts(table, spec, origin, tag, source, text_column, label_column, label, category_column)
    return _sample(prompts, limit, seed)


def load_judge_comparison(path: str | Path, *, encoding: str | None = None) -> list[LabelledResponse]:
    """JailbreakBench's judge-comparison.csv: jailbreak prompt, model response and the human majority verdict.

    ``encoding`` defaults to "mac_roman" for the re-encoded copy (a file name containing "mac_roman"), else utf-8.
    """
    path = Path(path)
    if encoding is None:
        encoding = "mac_roman" if "mac_roman" in path.name else "utf-8"
    table = _load_local(path, encoding)
    where = str(path)
    prompts, responses = _column(table, "prompt", where), _column(table, "target_response", where)
    majority = _column(table, "human_majority", where)
    goals = _column(table, "goal", where) if "goal" in table.column_names else [""] * table.num_rows
    ids = _column(table, "Index", where) if "Index" in table.column_names else [str(i) for i in range(table.num_rows)]
    judge_columns = [c for c in table.column_names if c.endswith("_cf")]
    judge_values = {c: _column(table, c, where) for c in judge_columns}
    return [
        LabelledResponse(
            prompt=prompts[i],
            response=responses[i],
            unsafe=_as_bool(majority[i], "human_majority", i),
            goal=goals[i],
            item_id=f"{path.stem}:{ids[i]}",
            judges={c: _as_bool(judge_values[c][i], c, i) for c in judge_columns},
        )
        for i in range(table.num_rows)
    ]


def _builtin_split(source: str, split: str | None) -> str | None:
    _, _, suffix = source.partition(":")
    if suffix and split is not None and suffix != split:
        raise ValueError(f"source {source!r} conflicts with split={split!r}")
    return suffix or split


def _load_table(
    source: str, spec: BenchmarkSpec | None, split: str | None, config: str | None, encoding: str | None
) -> tuple[Dataset, str, str, BenchmarkSpec | None]:
    """Returns (table, origin for `origin_labels`, tag that prefixes prompt ids, resolved spec)."""
    path = Path(source)
    if source in BENCHMARKS and not path.exists():
        spec = spec or BENCHMARKS[source]
        if BENCHMARKS[source].hub_id is None:
            raise ValueError(f"benchmark {source!r} has no hub copy; pass the path of its local file instead")
        source = cast(str, BENCHMARKS[source].hub_id)
    elif path.exists() or path.suffix.lower() in LOCAL_FORMATS or not _HUB_ID.fullmatch(source):
        if split not in (None, "train"):
            raise ValueError(f"a local file has a single split; got split={split!r} for {source}")
        spec = spec or detect_benchmark(path.name) or detect_benchmark(path.parent.name)
        table = _load_local(path, encoding or (spec.encoding if spec else "utf-8"))
        return table, path.name, path.stem, spec
    spec = spec or next((s for s in BENCHMARKS.values() if s.hub_id == source), None) or detect_benchmark(source)
    config = config or (spec.hub_config if spec else None)
    split = split or (spec.hub_split if spec else "train")
    table = _load_hub(source, config, split, dict(spec.hub_kwargs) if spec else {})
    tag = f"{source}/{config}" if config else source
    return table, f"{config or ''}/{split}", tag, spec


def _load_local(path: Path, encoding: str) -> Dataset:
    import datasets

    if path.is_dir():
        raise ValueError(f"{path} is a directory; pass one of its data files")
    if not path.is_file():
        raise FileNotFoundError(f"prompt file not found: {path}")
    fmt = LOCAL_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"unsupported file type {path.suffix!r} for {path}; use one of {', '.join(LOCAL_FORMATS)}")
    kwargs: dict[str, Any] = {}
    if fmt == "csv":  # keep_default_na: a prompt such as "None" or "NA" must stay text, not become null
        kwargs = {"encoding": encoding, "keep_default_na": False}
        if path.suffix.lower() == ".tsv":
            kwargs["delimiter"] = "\t"
    elif fmt == "json":
        kwargs = {"encoding": encoding}
    try:
        table = datasets.load_dataset(fmt, data_files=str(path), split="train", **kwargs)
    except datasets.exceptions.DatasetGenerationError as err:
        if isinstance(err.__cause__, UnicodeDecodeError) or "codec can't decode" in str(err.__cause__):
            raise ValueError(f"cannot decode {path} as {encoding!r}; pass encoding= (e.g. 'mac_roman')") from err
        raise
    return cast("Dataset", table)


def _load_hub(hub_id: str, config: str | None, split: str, kwargs: dict[str, Any]) -> Dataset:
    import datasets

    try:
        table = datasets.load_dataset(hub_id, config, split=split, **kwargs)
    except (OSError, datasets.exceptions.DatasetsError) as err:  # ConnectionError, OfflineModeIsEnabled, not cached
        raise HubUnavailableError(
            f"cannot load hub dataset {hub_id!r} (config={config!r}, split={split!r}): the Hugging Face Hub is "
            "unreachable or offline mode is on (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE) and no cached copy exists, "
            "or the dataset is gated/missing. Download it and pass a local .csv/.tsv/.jsonl/.parquet path instead, "
            f"e.g. load_prompts('path/to/file.csv', benchmark=...). Cause: {type(err).__name__}: {err}"
        ) from err
    return cast("Dataset", table)


def _to_prompts(
    table: Dataset,
    spec: BenchmarkSpec | None,
    origin: str,
    tag: str,
    where: str,
    text_column: str | None,
    label_column: str | None,
    label: str | None,
    category_column: str | None,
) -> list[Prompt]:
    columns, n = table.column_names, table.num_rows
    texts = _texts(table, spec, text_column, where)
    labels = _labels(table, spec, origin, label, label_column, where)
    if category_column is None:  # an explicit column must exist; the defaults are used only when present
        defaults = (spec.category_column if spec else None, "category")
        category_column = next((c for c in defaults if c and c in columns), None)
    categories = _column(table, category_column, where) if category_column else [""] * n
    id_column = next((c for c in (spec.id_column if spec else None, "id") if c and c in columns), None)
    ids = _column(table, id_column, where) if id_column else [str(i) for i in range(n)]
    source = spec.name if spec else tag
    return [
        Prompt(text=texts[i], label=labels[i], prompt_id=f"{tag}:{ids[i]}", source=source, category=categories[i])
        for i in range(n)
    ]


def _texts(table: Dataset, spec: BenchmarkSpec | None, text_column: str | None, where: str) -> list[str]:
    columns = table.column_names
    if text_column is None and spec is None:
        text_column = next((c for c in ("text", "prompt") if c in columns), "text")
    column = text_column or cast(BenchmarkSpec, spec).text_column
    texts = _column(table, column, where)
    if text_column is None and spec is not None:
        if spec.fallback_text_column and spec.fallback_text_column in columns:
            fallback = _column(table, spec.fallback_text_column, where)
            texts = [t if t.strip() else f for t, f in zip(texts, fallback, strict=True)]
        if spec.context_column and spec.context_column in columns:
            contexts = _column(table, spec.context_column, where)
            texts = [f"{c}\n\n---\n\n{t}" if c.strip() else t for t, c in zip(texts, contexts, strict=True)]
    for i, text in enumerate(texts):
        if not text.strip():
            raise ValueError(f"{where}: row {i} has an empty text in column {column!r}")
    return texts


def _labels(
    table: Dataset,
    spec: BenchmarkSpec | None,
    origin: str,
    label: str | None,
    label_column: str | None,
    where: str,
) -> list[PromptLabel]:
    n, columns = table.num_rows, table.column_names
    if label is not None:
        return [_as_label(label, "label=")] * n
    if label_column is None:  # an explicit column must exist; the default is used only when present
        default = spec.label_column if spec else "label"
        label_column = default if default is not None and default in columns else None
    if label_column is not None:
        mapping = {**GENERIC_LABELS, **(spec.label_map if spec else {})}
        values = _column(table, label_column, where)
        return [_map_label(v, mapping, label_column, i, where) for i, v in enumerate(values)]
    fixed = next((lab for key, lab in (spec.origin_labels if spec else ()) if key in origin.lower()), None)
    fixed = fixed or (spec.label if spec else None)
    if fixed is None:
        raise ValueError(
            f"{where}: cannot tell the prompt labels (no label column among {columns}); "
            "label the whole source (label='harmful'|'benign'|'general'), name its label column (label_column=...), "
            "or name its benchmark (benchmark=...)"
        )
    return [fixed] * n


def _column(table: Dataset, name: str, where: str) -> list[str]:
    if name not in table.column_names:
        raise ValueError(f"{where}: column {name!r} not found; available columns: {', '.join(table.column_names)}")
    return ["" if v is None else str(v) for v in table[name]]


def _map_label(value: str, mapping: Mapping[str, PromptLabel], column: str, index: int, where: str) -> PromptLabel:
    key = value.strip().lower()
    if key not in mapping:
        raise ValueError(
            f"{where}: unknown label value {value!r} in column {column!r} at row {index}; "
            f"known values: {', '.join(sorted(mapping))}"
        )
    return mapping[key]


def _as_label(value: str, where: str) -> PromptLabel:
    if value not in LABELS:
        raise ValueError(f"{where}: unknown label {value!r}; allowed: {', '.join(LABELS)}")
    return value


def _as_bool(value: str, column: str, index: int) -> bool:
    key = value.strip().lower()
    if key not in ("0", "1", "true", "false"):
        raise ValueError(f"unknown value {value!r} in column {column!r} at row {index}; expected 0/1")
    return key in ("1", "true")


def _sample(prompts: Sequence[Prompt], limit: int | None, seed: int) -> list[Prompt]:
    if limit is None or limit >= len(prompts):
        return list(prompts)
    keep = sorted(random.Random(seed).sample(range(len(prompts)), limit))
    return [prompts[i] for i in keep]
