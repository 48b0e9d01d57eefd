"""Serving load benchmark: a fixed number of chat requests, a fixed number in flight, against the served pair.

One invocation starts a local Ray, Serve on 127.0.0.1 (a free port) and the pair exactly as ``waltz-ray serve``
deploys it (``serve.*`` of the config), then sends ``--requests`` chat completions from ``--concurrency`` client
workers (each sends its next request when its last one is answered). The prompts are the config's eval split
(harmful and benign), in order and cycled; decoding is greedy. Two warm-up requests are sent first and not counted.

What is timed: each request from send to the full response (client side, so queueing in the proxy and the ingress
is included); throughput is answered requests over the wall time of the whole burst. The client runs on the same
machine as the server. FTR is the share of answered requests whose ``waltz.triggered`` is true, also per label.

Output (stdout): a summary, ``p50_ms=``, ``throughput_rps=``, ``ftr=`` and, as the LAST line, ``p95_ms=<value>``.
With ``--out`` the numbers are written there as JSON too.

    python benchmarks/serve_load.py --conversation runs/tiny/checkpoints/final/conversation \\
        --feedback runs/tiny/checkpoints/final/feedback          # 200 requests, 8 in flight
    python benchmarks/serve_load.py --reduced                    # seconds-scale smoke run (test suite)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
REDUCED = ["tiny.sft_steps=3", "tiny.hidden_size=64", "tiny.num_layers=1"]
REDUCED_REQUESTS, REDUCED_CONCURRENCY = 16, 4
WARMUP = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "tiny.yaml"), help="YAML config")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="config override"
    )
    parser.add_argument("--conversation", help="conversation agent checkpoint (default: the config's)")
    parser.add_argument("--feedback", help="feedback agent checkpoint (default: the config's)")
    parser.add_argument("--requests", type=int, default=None, help="requests to time (default 200)")
    parser.add_argument("--concurrency", type=int, default=None, help="requests in flight (default 8)")
    parser.add_argument("--out", help="also write the summary here (JSON)")
    parser.add_argument(
        "--reduced",
        action="store_true",
        help=f"tiny on-the-fly model (sft 3 steps, hidden 64, 1 layer), {REDUCED_REQUESTS} requests, "
        f"{REDUCED_CONCURRENCY} in flight: a smoke run for the test suite",
    )
    return parser


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


async def send(client: Any, body: dict[str, Any]) -> tuple[float, int, dict[str, Any] | None]:
    start = time.perf_counter()
    response = await client.post("/v1/chat/completions", json=body)
    elapsed = time.perf_counter() - start
    return elapsed, response.status_code, response.json() if response.status_code == 200 else None


async def burst(base: str, key: str, bodies: list[dict[str, Any]], concurrency: int) -> tuple[list[Any], float]:
    import httpx

    queue: asyncio.Queue[tuple[int, dict[str, Any]]] = asyncio.Queue()
    for item in enumerate(bodies):
        queue.put_nowait(item)
    results: list[Any] = [None] * len(bodies)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=300, limits=limits) as client:
        for body in bodies[:WARMUP]:
            await send(client, body)

        async def worker() -> None:
            while not queue.empty():
                index, body = queue.get_nowait()
                results[index] = await send(client, body)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    return results, wall


def summarize(results: list[Any], labels: list[str], wall: float, concurrency: int) -> dict[str, Any]:
    ok = [(r, label) for r, label in zip(results, labels, strict=True) if r[1] == 200]
    latencies_ms = [r[0] * 1000.0 for r, _ in ok]
    triggered = [bool(r[2]["waltz"]["triggered"]) for r, _ in ok]
    by_label: dict[str, list[bool]] = {}
    for (_, label), flag in zip(ok, triggered, strict=True):
        by_label.setdefault(label, []).append(flag)
    stages: dict[str, list[float]] = {}
    for r, _ in ok:
        for stage, ms in r[2]["waltz"]["timings_ms"].items():
            stages.setdefault(stage, []).append(ms)
    return {
        "requests": len(results),
        "concurrency": concurrency,
        "ok": len(ok),
        "errors": dict(Counter(str(r[1]) for r in results if r[1] != 200)),
        "wall_s": round(wall, 3),
        "throughput_rps": round(len(ok) / wall, 3),
        "p50_ms": round(percentile(latencies_ms, 0.50), 2) if ok else None,
        "p95_ms": round(percentile(latencies_ms, 0.95), 2) if ok else None,
        "mean_ms": round(statistics.fmean(latencies_ms), 2) if ok else None,
        "ftr": round(sum(triggered) / len(ok), 4) if ok else None,
        "ftr_by_label": {k: round(sum(v) / len(v), 4) for k, v in sorted(by_label.items())},
        "n_by_label": {k: len(v) for k, v in sorted(by_label.items())},
        "stage_mean_ms": {k: round(statistics.fmean(v), 2) for k, v in stages.items()},
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    from ray import serve

    from waltz_ray.config import load_config
    from waltz_ray.data.loaders import load_prompts
    from waltz_ray.runtime.driver import ray_session
    from waltz_ray.serve.app import deploy, start_http, undeploy
    from waltz_ray.serve.auth import digest
    from waltz_ray.worlds import resolve_model_path

    requests = args.requests or (REDUCED_REQUESTS if args.reduced else 200)
    concurrency = args.concurrency or (REDUCED_CONCURRENCY if args.reduced else 8)
    config = load_config(args.config, [*(REDUCED if args.reduced else []), *args.overrides, "serve.port=0"])
    given = {"conversation": args.conversation, "feedback": args.feedback}
    paths = {a: given[a] or resolve_model_path(getattr(config.agents, a).model_path, config) for a in given}
    prompts = load_prompts(config.data.eval)
    picked = [prompts[i % len(prompts)] for i in range(requests)]
    bodies = [{"model": config.serve.model_name, "messages": [{"role": "user", "content": p.text}]} for p in picked]
    key = secrets.token_urlsafe(24)
    with ray_session():
        port = start_http(config.serve)
        names = deploy(config, paths, (digest(key),))
        try:
            results, wall = asyncio.run(burst(f"http://127.0.0.1:{port}", key, bodies, concurrency))
        finally:
            undeploy(names)
            serve.shutdown()  # type: ignore[no-untyped-call]
    summary = summarize(results, [p.label for p in picked], wall, concurrency)
    summary["models"] = paths
    return summary


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    sys.path.insert(0, str(ROOT))  # run from a checkout without installing
    # Ray workers (the replicas) import the same checkout as this driver
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    summary = run(args)
    print(json.dumps(summary, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=2))
    print(f"p50_ms={summary['p50_ms']}")
    print(f"throughput_rps={summary['throughput_rps']}")
    print(f"ftr={summary['ftr']}")
    print(f"p95_ms={summary['p95_ms']}")
    return 0 if summary["ok"] == summary["requests"] else 1


if __name__ == "__main__":
    sys.exit(main())
