"""Submit a waltz-ray run to a Ray cluster as a Ray job: this checkout as working dir, jobs/runtime_env.yaml.

    python jobs/submit.py                      # the tiny run on http://127.0.0.1:8265, output in <repo>/runs/tiny
    python jobs/submit.py --address http://HEAD:8265 --no-wait -- waltz-ray train --config configs/tiny.yaml \
        --out /shared/runs/tiny

A runtime env is job metadata (``ray job list`` and the dashboard show it), and so is the entrypoint: this refuses
either when it carries ``WANDB_API_KEY`` or the key's value, and does not hand this shell's key to ``ray job submit``.
The job gets the key on the nodes instead (jobs/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
RUNTIME_ENV = ROOT / "jobs" / "runtime_env.yaml"
SECRETS = ("WANDB_API_KEY",)
KEY_HELP = (
    "give the key to the job on the nodes instead: a key file (--set logging.wandb_key_file=/path/on/the/nodes) "
    "or WANDB_API_KEY in the environment the nodes' `ray start` runs with"
)


class SubmitError(ValueError):
    """The job would leak a secret into its metadata, or its arguments are unusable."""


def default_entrypoint() -> list[str]:
    """The README's train command; ``--out`` absolute, since a relative one lands inside the job's unpacked copy."""
    return ["waltz-ray", "train", "--config", "configs/tiny.yaml", "--out", str(ROOT / "runs" / "tiny")]


def check_secrets(runtime_env: Mapping[str, Any], entrypoint: Sequence[str], env: Mapping[str, str]) -> None:
    """Raise ``SubmitError`` when the runtime env or the entrypoint names a secret or holds the value of one set in
    ``env`` (this shell)."""
    env_vars = runtime_env.get("env_vars") or {}
    for name in SECRETS:
        if name in env_vars:
            raise SubmitError(f"{name} is in runtime_env.env_vars, which is job metadata anyone can read; {KEY_HELP}")
        if any(name in arg for arg in entrypoint):
            raise SubmitError(f"the entrypoint mentions {name}, and the entrypoint is job metadata; {KEY_HELP}")
        value = env.get(name)
        if value and (value in json.dumps(runtime_env) or any(value in arg for arg in entrypoint)):
            raise SubmitError(f"the value of {name} is in the runtime env or the entrypoint; {KEY_HELP}")


def out_dir(entrypoint: Sequence[str]) -> str | None:
    args = list(entrypoint)
    for i, arg in enumerate(args):
        if arg == "--out" and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--out="):
            return arg.split("=", 1)[1]
    return None


def ray_cli() -> str:
    return shutil.which("ray") or str(Path(sys.executable).with_name("ray"))


def build_command(args: argparse.Namespace, entrypoint: Sequence[str]) -> list[str]:
    command = [ray_cli(), "job", "submit", "--address", args.address, "--working-dir", str(ROOT)]
    command += ["--runtime-env", str(args.runtime_env)]
    if args.submission_id:
        command += ["--submission-id", args.submission_id]
    if args.no_wait:
        command.append("--no-wait")
    return [*command, "--", *entrypoint]


def submit_env(env: Mapping[str, str]) -> dict[str, str]:
    """This shell's environment without its secrets: ``ray job submit`` sends none of it today, and that stays so."""
    return {k: v for k, v in env.items() if k not in SECRETS}


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    argv = list(argv)
    split = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(prog="jobs/submit.py", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--address",
        default=os.environ.get("RAY_API_SERVER_ADDRESS") or "http://127.0.0.1:8265",
        help="the cluster's dashboard (default: $RAY_API_SERVER_ADDRESS or http://127.0.0.1:8265)",
    )
    parser.add_argument("--runtime-env", type=Path, default=RUNTIME_ENV, help="runtime_env YAML file")
    parser.add_argument("--submission-id", help="job id (default: Ray picks one)")
    parser.add_argument("--no-wait", action="store_true", help="return once submitted instead of streaming the logs")
    parser.add_argument("--dry-run", action="store_true", help="check and print the command, submit nothing")
    args = parser.parse_args(argv[:split])
    return args, argv[split + 1 :] or default_entrypoint()


def main(argv: Sequence[str] | None = None) -> int:
    args, entrypoint = parse_args(sys.argv[1:] if argv is None else argv)
    runtime_env = yaml.safe_load(args.runtime_env.read_text()) or {}
    try:
        check_secrets(runtime_env, entrypoint, os.environ)
    except SubmitError as exc:
        print(f"jobs/submit.py: refusing to submit: {exc}", file=sys.stderr)
        return 2
    out = out_dir(entrypoint)
    if out is not None and not os.path.isabs(out):
        note = "lands inside the job's unpacked working dir on the head node; pass an absolute path (shared storage)"
        print(f"jobs/submit.py: note: --out {out} is relative: it {note}", file=sys.stderr)
    if any(name in os.environ for name in SECRETS):
        print(f"jobs/submit.py: note: this shell's WANDB_API_KEY is not sent with the job; {KEY_HELP}", file=sys.stderr)
    command = build_command(args, entrypoint)
    print(shlex.join(command), flush=True)
    if args.dry_run:
        return 0
    return subprocess.call(command, env=submit_env(os.environ))


if __name__ == "__main__":
    sys.exit(main())
