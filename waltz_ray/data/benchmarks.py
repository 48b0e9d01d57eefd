"""The benchmark registry: how each public safety benchmark's columns map onto `Prompt`, the label values every
loader understands, and finding a benchmark's spec by name or from a file name or hub id."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from waltz_ray.types import PromptLabel

LABELS: tuple[PromptLabel, ...] = ("harmful", "benign", "general")
LOCAL_FORMATS = {".csv": "csv", ".tsv": "csv", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}

# Label-column values every loader understands (compared after str().strip().lower()); a benchmark adds its own.
GENERIC_LABELS: Mapping[str, PromptLabel] = {
    "harmful": "harmful",
    "unsafe": "harmful",
    "1": "harmful",
    "true": "harmful",
    "benign": "benign",
    "safe": "benign",
    "0": "benign",
    "false": "benign",
    "general": "general",
}


@dataclass(frozen=True)
class BenchmarkSpec:
    """How one public benchmark's columns map onto `Prompt`.

    The label comes from the first rule that applies: ``label_column`` (when the table has it, values mapped through
    ``label_map`` and `GENERIC_LABELS`), then ``origin_labels`` (a substring of the file name or hub config/split,
    e.g. JailbreakBench ships harmful and benign behaviours as two files), then the fixed ``label``.
    """

    name: str
    text_column: str
    label: PromptLabel | None = None
    label_column: str | None = None
    label_map: Mapping[str, PromptLabel] = field(default_factory=dict, hash=False)
    origin_labels: tuple[tuple[str, PromptLabel], ...] = ()
    category_column: str | None = None
    id_column: str | None = None
    fallback_text_column: str | None = None  # used for rows whose text column is empty
    context_column: str | None = None  # prepended to the text when non-empty (HarmBench contextual behaviours)
    hub_id: str | None = None
    hub_config: str | None = None
    hub_split: str = "train"
    hub_kwargs: Mapping[str, Any] = field(default_factory=dict, hash=False)
    encoding: str = "utf-8"
    aliases: tuple[str, ...] = ()


BENCHMARKS: dict[str, BenchmarkSpec] = {
    spec.name: spec
    for spec in (
        # xstest_prompts.csv: id, prompt, type, label (safe/unsafe), focus, note. Hub copy: same columns.
        BenchmarkSpec(
            name="xstest",
            text_column="prompt",
            label_column="label",
            label_map={"safe": "benign", "unsafe": "harmful"},
            category_column="type",
            id_column="id",
            hub_id="walledai/XSTest",
            hub_split="test",
        ),
        # harmbench_behaviors_text_{all,test,val}.csv: Behavior, FunctionalCategory, SemanticCategory, Tags,
        # ContextString, BehaviorID. All harmful; ContextString must precede contextual behaviours (HarmBench format).
        BenchmarkSpec(
            name="harmbench",
            text_column="Behavior",
            label="harmful",
            category_column="SemanticCategory",
            id_column="BehaviorID",
            context_column="ContextString",
        ),
        # strongreject_dataset.csv: category, source, forbidden_prompt. All harmful.
        BenchmarkSpec(name="strongreject", text_column="forbidden_prompt", label="harmful", category_column="category"),
        # harmful_behaviors.csv: goal, target. All harmful.
        BenchmarkSpec(name="advbench", text_column="goal", label="harmful"),
        # {harmful,benign}-behaviors.csv: Index, Goal, Target, Behavior, Category, Source; the file says the label.
        # Hub: JailbreakBench/JBB-Behaviors, config "behaviors", splits "harmful" / "benign" (same columns).
        BenchmarkSpec(
            name="jailbreakbench",
            text_column="Goal",
            label_column="label",
            origin_labels=(("harmful", "harmful"), ("benign", "benign")),
            category_column="Category",
            id_column="Index",
            hub_id="JailbreakBench/JBB-Behaviors",
            hub_config="behaviors",
            hub_split="harmful",
            aliases=("jbb",),
        ),
        # Columns follow the dataset card (gated, TSV): configs "train" (vanilla, adversarial, completion, data_type)
        # and "eval" (adversarial, label, data_type); vanilla rows leave `adversarial` empty.
        BenchmarkSpec(
            name="wildjailbreak",
            text_column="adversarial",
            fallback_text_column="vanilla",
            label_column="data_type",
            label_map={
                "vanilla_harmful": "harmful",
                "adversarial_harmful": "harmful",
                "vanilla_benign": "benign",
                "adversarial_benign": "benign",
            },
            hub_id="allenai/wildjailbreak",
            hub_config="train",
            hub_kwargs={"delimiter": "\t", "keep_default_na": False},
        ),
        # Columns follow the dataset card: configs or-bench-80k and or-bench-hard-1k (benign but scary-sounding) and
        # or-bench-toxic (harmful), each with `prompt` and `category`.
        BenchmarkSpec(
            name="or-bench",
            text_column="prompt",
            origin_labels=(("toxic", "harmful"), ("hard", "benign"), ("80k", "benign")),
            category_column="category",
            hub_id="bench-llm/or-bench",
            hub_config="or-bench-80k",
            aliases=("orbench",),
        ),
    )
}


def benchmark_spec(name: str) -> BenchmarkSpec:
    """The benchmark called ``name``; raises ``ValueError`` naming the valid ones."""
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; valid benchmarks: {', '.join(sorted(BENCHMARKS))}")
    return BENCHMARKS[name]


def detect_benchmark(name: str) -> BenchmarkSpec | None:
    """The benchmark whose name (or alias) occurs in ``name``, ignoring case and punctuation."""
    key = re.sub(r"[^a-z0-9]", "", name.lower())
    for spec in BENCHMARKS.values():
        if any(re.sub(r"[^a-z0-9]", "", alias) in key for alias in (spec.name, *spec.aliases)):
            return spec
    return None
