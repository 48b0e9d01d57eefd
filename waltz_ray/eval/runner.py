"""``waltz-ray eval``: the seven systems (docs/method.md) on the same prompts and judge, with intervals and cost.

Loads each model once (Hugging Face ``generate``, greedy), plays every system on every dataset, and returns the
report that ``eval.report`` writes as report.json, report.md and pareto.png.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from waltz_ray.config import WaltzConfig
from waltz_ray.core.metrics import pair_metrics
from waltz_ray.eval.bootstrap import bootstrap_distribution, mean_distribution, percentile_interval
from waltz_ray.eval.safeguard import JudgeSafeguard, RequestClassifierSafeguard, Safeguard, apply_safeguard
from waltz_ray.eval.systems import SYSTEMS, System, alone_episodes, oracle_episodes, pair_episodes
from waltz_ray.rollout import StageTimer
from waltz_ray.types import Episode, Prompt

log = logging.getLogger(__name__)

CI_KEYS = ("asr", "orr", "ftr", "label_f1")
# Stages that exist only because of the feedback step or the filter: the latency a system adds to answering.
ADDED_STAGES = ("feedback_generation", "revision_generation", "safeguard")


@dataclass(frozen=True)
class Dataset:
    name: str
    source: str
    prompts: list[Prompt]


@dataclass
class EvalOptions:
    """What to evaluate. Model paths left None are not evaluated (their systems are listed as skipped)."""

    datasets: list[Dataset]
    waltz_conversation: str | None = None
    waltz_feedback: str | None = None
    single_conversation: str | None = None
    systems: Sequence[str] = tuple(s.name for s in SYSTEMS)
    safeguard: str = "judge"  # judge | classifier | llm
    safeguard_model: str | None = None
    n_bootstrap: int = 1000
    level: float = 0.95
    progress: bool = True
    notes: dict[str, str] = field(default_factory=dict)


class Models:
    """Generators by path, each loaded once; in-process Hugging Face models, greedy evaluation."""

    def __init__(self, config: WaltzConfig) -> None:
        self.config = config
        self._loaded: dict[str, Any] = {}

    def get(self, path: str) -> Any:
        from waltz_ray.engines.hf import HFGenerator

        if path not in self._loaded:
            self._loaded[path] = HFGenerator.from_pretrained(path, self.config.agents.conversation.dtype)
        return self._loaded[path]


def base_paths(config: WaltzConfig) -> dict[str, str]:
    """The configured starting models of both agents (``tiny://`` resolved): the untrained systems' models."""
    from waltz_ray.worlds import resolve_model_path

    agents = config.agents
    return {
        "conversation": resolve_model_path(agents.conversation.model_path, config),
        "feedback": resolve_model_path(agents.feedback.model_path, config),
    }


def model_paths(config: WaltzConfig, options: EvalOptions) -> dict[str, str | None]:
    base = base_paths(config)
    return {
        "base_conversation": base["conversation"],
        "base_feedback": base["feedback"],
        "single_conversation": options.single_conversation,
        "waltz_conversation": options.waltz_conversation,
        "waltz_feedback": options.waltz_feedback,
    }


def skip_reason(system: System, paths: dict[str, str | None]) -> str | None:
    """Why ``system`` cannot run with these models (None: it can)."""
    if system.conversation == "single" and not paths["single_conversation"]:
        return "no single-model RL checkpoint (--single-run or --single-conversation)"
    if system.conversation == "waltz" and not (paths["waltz_conversation"] and paths["waltz_feedback"]):
        return "no WaltzRL checkpoints (--run, or --conversation and --feedback)"
    return None


def build_safeguard(kind: str, config: WaltzConfig, judge: Any, models: Models, model: str | None) -> Safeguard:
    """``judge``: the evaluation judge (sees dataset labels); ``classifier``: a request classifier (default model:
    the base conversation model); ``llm``: the LLM judge prompt on ``model``, labels withheld."""
    if kind == "judge":
        return JudgeSafeguard(judge, config.judge.kind, show_labels=True)
    path = model or base_paths(config)["conversation"]
    if kind == "classifier":
        return RequestClassifierSafeguard(models.get(path), path)
    if kind == "llm":
        from waltz_ray.engines.judges import LLMJudge

        return JudgeSafeguard(LLMJudge(models.get(path)), f"LLM ({path})", show_labels=False)
    raise ValueError(f"unknown safeguard {kind!r}; valid: judge, classifier, llm")


def system_metrics(episodes: Sequence[Episode]) -> dict[str, float | None]:
    """``pair_metrics`` with None where a rate has no denominator (no harmful prompts for ASR, no benign ones for
    ORR, no feedback verdicts for the label metrics) instead of a misleading 0."""
    metrics: dict[str, float | None] = dict(pair_metrics(episodes))
    if not metrics["n_harmful"]:
        for key in ("asr", "conversation_asr", "ftr_harmful"):
            metrics[key] = None
    if not metrics["n_benign"]:
        for key in ("orr", "conversation_orr", "ftr_benign"):
            metrics[key] = None
    if not any(e.rounds[0].verdict is not None for e in episodes):
        for key in ("feedback_format_rate", "label_accuracy", "label_precision", "label_recall", "label_f1"):
            metrics[key] = None
    return metrics


def cost(episodes: Sequence[Episode], seconds: dict[str, float]) -> dict[str, Any]:
    """Per prompt: the latency and tokens the feedback step (or the filter) adds, and c0's tokens for scale."""
    n = max(1, len(episodes))
    added_tokens = sum(
        len(r.feedback.token_ids) if r.feedback is not None else 0 for e in episodes for r in e.rounds
    ) + sum(len(r.response.token_ids) for e in episodes for r in e.rounds[1:])
    return {
        "added_latency_s_per_prompt": sum(seconds.get(s, 0.0) for s in ADDED_STAGES) / n,
        "added_tokens_per_prompt": added_tokens / n,
        "conversation_tokens_per_prompt": sum(len(e.rounds[0].response.token_ids) for e in episodes) / n,
        "seconds": {k: round(v, 6) for k, v in sorted(seconds.items())},
    }


def _stratum(episode: Episode) -> str:
    return "harmful" if episode.prompt.label == "harmful" else "benign"


def _ci_statistic(episodes: Sequence[Episode]) -> dict[str, float | None]:
    metrics = system_metrics(episodes)
    return {k: metrics[k] for k in CI_KEYS}


class Evaluation:
    """Plays the systems on one dataset after another; ``run`` returns the report dictionary."""

    def __init__(self, config: WaltzConfig, options: EvalOptions, judge: Any | None = None) -> None:
        from waltz_ray.factory import build_judge

        self.config = config
        self.options = options
        self.judge = judge if judge is not None else build_judge(config)
        self.models = Models(config)
        self.paths = model_paths(config, options)
        unknown = sorted(set(options.systems) - {s.name for s in SYSTEMS})
        if unknown:
            raise ValueError(f"unknown systems {unknown}; valid: {', '.join(s.name for s in SYSTEMS)}")
        self.systems = [s for s in SYSTEMS if s.name in options.systems]
        self.skipped = {s.name: r for s in self.systems if (r := skip_reason(s, self.paths)) is not None}
        self.safeguard: Safeguard | None = None
        if any(s.safeguard and s.name not in self.skipped for s in self.systems):
            self.safeguard = build_safeguard(
                options.safeguard, config, self.judge, self.models, options.safeguard_model
            )

    def run(self) -> dict[str, Any]:
        if self.config.runtime.num_threads:
            import torch

            torch.set_num_threads(self.config.runtime.num_threads)
        results: dict[str, dict[str, Any]] = {}
        distributions: dict[str, dict[str, dict[str, list[float]]]] = {}
        for dataset in self.options.datasets:
            results[dataset.name], distributions[dataset.name] = self.run_dataset(dataset)
        return {
            "judge": self.config.judge.model_dump(mode="json", exclude={"api_key_env", "api_key_file"}),
            "safeguard": None if self.safeguard is None else self.options.safeguard,
            "safeguard_description": None if self.safeguard is None else self.safeguard.description,
            "models": self.paths,
            "bootstrap": {
                "n_resamples": self.options.n_bootstrap,
                "level": self.options.level,
                "seed": self.config.seed,
                "stratified_by": "prompt label (harmful / benign)",
            },
            "datasets": [_dataset_summary(d) for d in self.options.datasets],
            "systems": [_system_summary(s, self.skipped.get(s.name)) for s in self.systems],
            "results": results,
            "average": self.average(results, distributions),
            "notes": dict(self.options.notes),
        }

    def run_dataset(self, dataset: Dataset) -> tuple[dict[str, Any], dict[str, dict[str, list[float]]]]:
        from waltz_ray.factory import rollout_settings

        settings = rollout_settings(self.config, evaluation=True)
        ids = [f"eval-{i}" for i in range(len(dataset.prompts))]  # train.evaluate's ids: the same episodes
        alone_cache: dict[str, tuple[list[Episode], dict[str, float]]] = {}
        results: dict[str, Any] = {}
        distributions: dict[str, dict[str, list[float]]] = {}
        runnable = [s for s in self.systems if s.name not in self.skipped]
        for system in _progress(runnable, self.options.progress, dataset.name):
            timer = StageTimer()
            conversation = self.models.get(self._path(system.conversation, "conversation"))
            if system.feedback is None or system.feedback == "oracle":
                if system.conversation not in alone_cache:
                    alone_timer = StageTimer()
                    episodes = alone_episodes(dataset.prompts, conversation, self.judge, settings, ids, alone_timer)
                    alone_cache[system.conversation] = (episodes, dict(alone_timer.seconds))
                episodes, seconds = alone_cache[system.conversation]
                timer.seconds.update(seconds)
                if system.feedback == "oracle":
                    episodes = oracle_episodes(episodes, conversation, self.judge, settings, timer)
            else:
                feedback = self.models.get(self._path(system.feedback, "feedback"))
                episodes = pair_episodes(dataset.prompts, conversation, feedback, self.judge, settings, ids, timer)
            entry: dict[str, Any] = {}
            generated = episodes  # what the models produced, for the token counts (a filter's refusal is free)
            if system.safeguard:
                assert self.safeguard is not None
                with timer("safeguard"):
                    episodes, stats = apply_safeguard(episodes, self.safeguard, self.judge)
                entry["safeguard"] = {"blocked_rate": stats.blocked / max(1, stats.n), "failures": stats.failures}
            distributions[system.name] = bootstrap_distribution(
                episodes, _ci_statistic, self.options.n_bootstrap, self.config.seed, strata=_stratum
            )
            entry["metrics"] = system_metrics(episodes)
            entry["ci"] = {
                k: list(percentile_interval(v, self.options.level)) for k, v in distributions[system.name].items()
            }
            entry["cost"] = cost(generated, dict(timer.seconds))
            results[system.name] = entry
        return results, distributions

    def _path(self, which: str, agent: str) -> str:
        path = self.paths[f"{which}_{agent}"]
        if path is None:  # skip_reason rules this out
            raise ValueError(f"no {which} {agent} model")
        return path

    def average(
        self, results: dict[str, dict[str, Any]], distributions: dict[str, dict[str, dict[str, list[float]]]]
    ) -> dict[str, dict[str, Any]]:
        """Per system, each metric averaged over the datasets where it is defined (ASR over those with harmful
        prompts, ORR over those with benign ones), with the interval of that average."""
        out: dict[str, dict[str, Any]] = {}
        for system in self.systems:
            if system.name in self.skipped:
                continue
            entry: dict[str, Any] = {}
            for key in (*CI_KEYS, "added_latency_s_per_prompt", "added_tokens_per_prompt"):
                values = [_value(r[system.name], key) for r in results.values()]
                present = [v for v in values if v is not None]
                entry[key] = sum(present) / len(present) if present else None
                if key in CI_KEYS:
                    dist = mean_distribution([d[system.name].get(key, []) for d in distributions.values()])
                    entry[f"{key}_ci"] = list(percentile_interval(dist, self.options.level)) if dist else None
            entry["n_datasets"] = len(results)
            out[system.name] = entry
        return out


def _value(entry: dict[str, Any], key: str) -> float | None:
    value = entry["metrics"].get(key, entry["cost"].get(key))
    return None if value is None else float(value)


def _dataset_summary(dataset: Dataset) -> dict[str, Any]:
    harmful = sum(1 for p in dataset.prompts if p.label == "harmful")
    return {
        "name": dataset.name,
        "source": dataset.source,
        "n": len(dataset.prompts),
        "n_harmful": harmful,
        "n_benign": len(dataset.prompts) - harmful,
    }


def _system_summary(system: System, skipped: str | None) -> dict[str, Any]:
    return {
        "name": system.name,
        "label": system.label,
        "conversation": system.conversation,
        "feedback": system.feedback,
        "safeguard": system.safeguard,
        "skipped": skipped,
    }


def _progress(items: list[System], enabled: bool, name: str) -> Any:
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=f"waltz-ray eval {name}", unit="system")


def evaluate(config: WaltzConfig, options: EvalOptions, out_dir: str | Path) -> dict[str, Any]:
    """Run the evaluation and write report.json, report.md and pareto.png into ``out_dir``."""
    from waltz_ray.eval.report import write_report

    start = time.perf_counter()
    report = Evaluation(config, options).run()
    report["seconds"] = round(time.perf_counter() - start, 3)
    write_report(report, out_dir)
    return report
