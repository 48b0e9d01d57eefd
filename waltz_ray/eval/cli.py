"""The ``eval`` and ``judge-agreement`` subcommands: their arguments and what they run (wired in ``waltz_ray.cli``)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from waltz_ray.config import WaltzConfig
from waltz_ray.eval.systems import SYSTEM_NAMES

if TYPE_CHECKING:
    from waltz_ray.eval.runner import Dataset


def _judge_arg(parser: argparse.ArgumentParser) -> None:
    # Shorthand for --set judge.kind=KIND; the judge's other fields come from the config or --set judge.<field>=...
    parser.add_argument(
        "--judge",
        dest="overrides",
        action="append",
        type=lambda kind: f"judge.kind={kind}",
        metavar="{rule,llm,http}",
        help="the judge (default: the config's); e.g. --judge llm --set judge.model_path=PATH",
    )


def add_eval_parser(sub: Any, config_args: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser(
        "eval", help="evaluate the seven systems of docs/method.md: ASR, ORR, FTR, label F1, cost; report + plot"
    )
    config_args(p)
    _judge_arg(p)
    p.add_argument("--out", required=True, help="output directory: report.json, report.md, pareto.png")
    p.add_argument(
        "--data",
        action="append",
        default=[],
        metavar="[NAME=]SOURCE",
        help="prompts (repeatable): builtin:eval, a local CSV/JSONL/Parquet file or a hub id, through the "
        "benchmark loaders; default: the config's eval split with its eval_limit",
    )
    p.add_argument(
        "--data-label",
        action="append",
        default=[],
        metavar="[NAME=]LABEL",
        help="label every prompt of the --data source NAME (without NAME=: of every --data source) harmful, benign or "
        "general: for a file with no label column, e.g. --data mine=prompts.csv --data-label mine=benign",
    )
    p.add_argument(
        "--text-column",
        action="append",
        default=[],
        metavar="[NAME=]COLUMN",
        help="the prompt column of the --data source NAME (or of every source), when it is not a known benchmark's",
    )
    p.add_argument(
        "--label-column",
        action="append",
        default=[],
        metavar="[NAME=]COLUMN",
        help="the label column of the --data source NAME (or of every source); values harmful/unsafe/1 or "
        "benign/safe/0 (docs/evaluation.md)",
    )
    p.add_argument("--limit", type=int, help="at most N prompts per --data source (a seeded sample)")
    p.add_argument("--run", help="a WaltzRL training run: its checkpoints/final pair and (without --config) its config")
    p.add_argument("--conversation", help="WaltzRL conversation checkpoint (instead of --run)")
    p.add_argument("--feedback", help="WaltzRL feedback checkpoint (instead of --run)")
    p.add_argument("--single-run", help="a single-model RL run (algorithm.mode=single): its final conversation agent")
    p.add_argument("--single-conversation", help="single-model RL conversation checkpoint (instead of --single-run)")
    p.add_argument(
        "--systems",
        default=",".join(SYSTEM_NAMES),
        help=f"comma-separated subset of {','.join(SYSTEM_NAMES)} (default: all)",
    )
    p.add_argument(
        "--safeguard",
        choices=["judge", "classifier", "llm"],
        default="judge",
        help="the filter of the '+ safeguard' systems: the evaluation judge (default; with the rule judge an oracle "
        "that sees dataset labels), a request classifier, or the LLM judge prompt on --safeguard-model",
    )
    p.add_argument("--safeguard-model", help="model of the classifier/llm safeguard (default: the base model)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the intervals (0: none)")
    p.add_argument("--level", type=float, default=0.95, help="confidence level of the intervals")


def add_agreement_parser(sub: Any, config_args: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("judge-agreement", help="accuracy and Cohen's kappa of a judge against human labels")
    config_args(p)
    _judge_arg(p)
    p.add_argument(
        "--data",
        required=True,
        help="human-labelled file (JailbreakBench judge-comparison columns: prompt, target_response, human_majority)",
    )
    p.add_argument("--encoding", help="file encoding (default: mac_roman when the name says so, else utf-8)")
    p.add_argument(
        "--label",
        choices=["harmful", "benign", "general"],
        help="prompt label given to judges that need one (the rule judge) for rows --label-from does not match",
    )
    p.add_argument(
        "--label-from",
        help="a prompt file (e.g. XSTest): a row whose goal (else prompt) matches one of its prompts takes its label",
    )
    p.add_argument("--out", help="also write the JSON result to this file")
    p.add_argument(
        "--task",
        choices=["unsafe", "refusal"],
        default="unsafe",
        help="unsafe: the judge's unsafe label vs the file's human_majority (JailbreakBench layout); refusal: "
        "detect_refusal and the prefix-list baseline vs a human refusal label in any CSV/JSONL (docs/judge.md)",
    )
    p.add_argument("--text-column", default="response", help="--task refusal: the response column")
    p.add_argument("--label-column", default="label", help="--task refusal: compliance/refusal/partial (or 0/1)")
    p.add_argument("--prompt-column", default="prompt", help="--task refusal: the prompt column (shown only)")
    p.add_argument("--split", help="--task refusal: keep rows whose 'split' column has this value (e.g. test)")
    p.add_argument("--show", type=int, default=20, help="--task refusal: disagreements printed (all go to --out)")


def run_eval(config: WaltzConfig, args: argparse.Namespace) -> int:
    from waltz_ray.eval.runner import EvalOptions, evaluate

    conversation, feedback = args.conversation, args.feedback
    if args.run and not (conversation and feedback):
        run_conversation, run_feedback = run_paths(args.run)
        conversation, feedback = conversation or run_conversation, feedback or run_feedback
    single = args.single_conversation
    notes = {}
    if args.single_run and not single:
        single = run_paths(args.single_run)[0]
        notes["single-model RL"] = f"conversation agent of {args.single_run} ({_mode(args.single_run)})"
    if args.run:
        notes["WaltzRL"] = f"final pair of {args.run}"
    try:
        per_source = {
            "label": per_source_options(args.data_label, "--data-label"),
            "text_column": per_source_options(args.text_column, "--text-column"),
            "label_column": per_source_options(args.label_column, "--label-column"),
        }
        datasets = load_datasets(config, args.data, args.limit, per_source)
    except (OSError, ValueError) as exc:
        print(f"waltz-ray eval: {exc}", file=sys.stderr)
        return 2
    options = EvalOptions(
        datasets=datasets,
        waltz_conversation=conversation,
        waltz_feedback=feedback,
        single_conversation=single,
        systems=[s.strip() for s in args.systems.split(",") if s.strip()],
        safeguard=args.safeguard,
        safeguard_model=args.safeguard_model,
        n_bootstrap=args.bootstrap,
        level=args.level,
        progress=config.logging.progress,
        notes=notes,
    )
    report = evaluate(config, options, args.out)
    print(json.dumps(report["average"], indent=2))
    print(f"report written to {args.out}/report.md (and report.json, pareto.png)", file=sys.stderr)
    return 0


def _mode(run_dir: str) -> str:
    from waltz_ray.config import load_config

    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        return "no config.yaml"
    return f"algorithm.mode={load_config(path, saved=True).algorithm.mode}"


def run_agreement(config: WaltzConfig, args: argparse.Namespace) -> int:
    if args.task == "refusal":
        return _run_refusal_agreement(args)
    from waltz_ray.eval.judge_agreement import agreement
    from waltz_ray.factory import build_judge

    result = agreement(
        build_judge(config), args.data, encoding=args.encoding, label=args.label, label_from=args.label_from
    )
    result["judge_config"] = config.judge.model_dump(mode="json", exclude={"api_key_env", "api_key_file"})
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


def _run_refusal_agreement(args: argparse.Namespace) -> int:
    from waltz_ray.eval.judge_agreement import format_report, refusal_agreement

    result = refusal_agreement(
        args.data,
        text_column=args.text_column,
        label_column=args.label_column,
        prompt_column=args.prompt_column,
        split_column="split" if args.split else None,
        split=args.split,
        encoding=args.encoding,
        show=args.show,
    )
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(format_report(result))
    return 0


def per_source_options(items: Sequence[str], flag: str) -> dict[str, str]:
    """``[NAME=]VALUE`` items of a per-source flag -> {NAME: VALUE}; an item without ``NAME=`` is keyed ``""``
    (every source). The same name twice is an error naming the flag."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.rpartition("=")
        key = name if sep else ""
        if not value:
            raise ValueError(f"{flag} {item!r}: no value after '='")
        if key in out:
            raise ValueError(f"{flag} given twice for {'source ' + repr(key) if key else 'every source'}")
        out[key] = value
    return out


def load_datasets(
    config: WaltzConfig,
    sources: Sequence[str],
    limit: int | None,
    per_source: dict[str, dict[str, str]] | None = None,
) -> list[Dataset]:
    """``NAME=SOURCE`` or ``SOURCE`` items through ``datasets.load_prompts``; none given: the run's own eval split
    with its ``data.eval_limit`` and seed (the prompts ``eval_initial.json`` / ``eval_final.json`` were scored on).
    ``per_source``: option (``label``, ``text_column``, ``label_column``) -> {source NAME or "" for all: value}
    (``per_source_options``); a NAME that names no ``--data`` source is an error."""
    from waltz_ray.data.loaders import load_prompts
    from waltz_ray.eval.runner import Dataset

    per_source = per_source or {}
    if not sources:
        if any(per_source.values()):
            raise ValueError("--data-label / --text-column / --label-column apply to --data sources; none was given")
        data = config.data
        prompts = load_prompts(data.eval, benchmark=data.benchmark, limit=data.eval_limit, seed=config.seed)
        return [Dataset(data.eval, data.eval, prompts)]
    named = []
    for item in sources:
        name, sep, source = item.partition("=")
        if not sep or Path(item).exists():
            name, source = item, item
        named.append((name, source))
    names = {name for name, _ in named}
    for option, values in per_source.items():
        unknown = sorted(set(values) - names - {""})
        if unknown:
            raise ValueError(f"{option} names {unknown}, which is no --data source; the sources are {sorted(names)}")
    out = []
    for name, source in named:
        options = {k: v.get(name, v.get("")) for k, v in per_source.items()}
        try:
            prompts = load_prompts(source, limit=limit, seed=config.seed, **options)
        except (OSError, ValueError) as exc:
            hint = ""
            if "cannot tell the prompt labels" in str(exc):
                hint = f" (label the whole file: --data-label {name}=benign|harmful|general; or --label-column)"
            raise ValueError(f"--data {name}: {exc}{hint}") from None
        out.append(Dataset(name, source, prompts))
    return out


def run_paths(run_dir: str | Path) -> tuple[str, str]:
    """A training run's final checkpoints: ``<run>/checkpoints/final/{conversation,feedback}``."""
    final = Path(run_dir) / "checkpoints" / "final"
    for agent in ("conversation", "feedback"):
        if not (final / agent / "config.json").is_file():
            raise FileNotFoundError(f"{final / agent} is not a checkpoint: did the run in {run_dir} finish?")
    return str(final / "conversation"), str(final / "feedback")
