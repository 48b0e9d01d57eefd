"""Scaling benchmark: the real Ray runtime driven by simulated 8B engines and learners on H100s.

What is real (imported from ``waltz_ray.runtime``, unchanged): the bounded, versioned ``EpisodeQueue`` and its
staleness admission, the ``RolloutProducer`` (launches ahead up to ``max_staleness + 1`` outstanding batches, in
launch order), ``queue_capacity``, ``staleness_metrics`` and the client proxies: ``RemoteGenerator`` (a batch
split into contiguous shards over the pool, ``min_version`` refusal of stale work), ``RemoteLearnerGroup`` (every
call to every rank, ``state_dict_ref`` by reference), ``ObjectStoreWeightSync``, ``wait_all`` and the driver's
``concurrently``. The driver loop below is ``Trainer.step`` (waltz_ray/trainer/loop.py) with the Ray parts +
``PoolWeightSync.sync`` reduced to their remote calls and in the same order: take the next admitted record at
the learners' versions; per agent log-probs then update on its learner group, both agents' groups at once
(``ConcurrentUpdater`` with ``runtime.concurrent_updates``; ``--sequential-learners``: one after the other,
the driver's earlier scheduling); then per agent push the new weights to its pool.

What is simulated: the actors. Generator actors (``GeneratorHost``'s ``generate``/``load_state_dict`` signatures,
serial like a Ray actor), learner ranks (``TorchLearnerHost``'s ``logprobs``/``update``/``state_dict_for_sync``)
and the rollout actor (``RolloutHost.run``'s signature: c0 on the conversation pool, f0 on the feedback pool, c1
for the feedback-triggered share; no judge, whose cost is negligible next to generation) sleep for the time the
cost model below gives, multiplied by ``--time-scale`` so a step takes a fraction of a second. They are Ray actors
with ``num_cpus=0``; the runtime's own overhead (Ray calls, pickling, the driver) is real and is divided by the
time scale like everything else when reported in model seconds, so it is overstated (see the README).

Cost model (``CostModel``): Llama-3.1-8B in bf16 on H100 SXM. Published figures: 989 TFLOP/s dense bf16 and
3.35 TB/s HBM3 (NVIDIA H100 datasheet); 2N FLOPs per token forward and 6N forward+backward (Kaplan et al. 2020).
Assumed efficiencies (ours, stated so they can be changed with flags): 40% MFU for training and scoring (typical
of what is reported for 8B full fine-tuning with ZeRO/FSDP), 60% of HBM bandwidth per decode step (so a decode
step costs at least 16 GB / (3.35 TB/s * 0.6) = 8.0 ms whatever the batch), a batch-saturated decode rate of 5,000
tokens/s per GPU (the order of vLLM's published offline-throughput figures for 8B on one H100), prefill at 50% MFU,
gradient all-reduce of 16 GB at 150 GB/s bus bandwidth (ring: 2(L-1)/L of it) and a weight sync of 1.0 s per push
(NCCL broadcast of 16 GB plus vLLM reload). Workload (docs/method.md-scale defaults, lengths assumed): 128
prompts per step, 256 prompt tokens, mean 512 generated tokens per conversation turn and 256 per feedback turn,
30% of episodes revised (FTR; the paper: 42.6% for the untrained pair on AlpacaEval).

Output (stdout): one row per (pool sizes, max_staleness) with generation and learner pool utilisation (busy time of
each actor over the measured window, averaged over the pool's actors; a generator's weight reload counts as busy),
"learner side busy" (the share of the window in which any learner rank works; with ``--sequential-learners`` each
group alone is idle while the other updates), episodes per hour and per GPU-hour (model
time), the staleness seen (max lag per agent), stale drops and "x bound" (model seconds per step over the cost
model's lower bound: generation side + learner side when synchronous, the longer of the two otherwise; the excess is
the real runtime's overhead plus sleep and scheduling latency, both divided by the time scale); a planning table;
and as the LAST line ``max_utilisation=<fraction>``: the highest learner-pool utilisation (mean over ranks) among
the runs of the largest configuration. The planning table comes from the cost model alone (``analytic_step``): per
learner size, the fewest generation GPUs per pool whose generation side is no longer than the learner side, i.e.
that keep the learners busy with max_staleness >= 1.

    python benchmarks/scaling.py                          # sizes 1:1 2:2 4:4 8:8 (gen actors per pool : learner
                                                          # ranks per agent), max_staleness 0 1 2, 6 steps each
    python benchmarks/scaling.py --sizes 2:1,4:2,8:4 --steps 8 --time-scale 0.02
    python benchmarks/scaling.py --reduced                # seconds-scale smoke run (test suite)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
AGENTS = ("conversation", "feedback")


@dataclass(frozen=True)
class CostModel:
    """Seconds of H100 time per operation for an 8B model (see the module docstring for the sources)."""

    params: float = 8.0e9
    peak_flops: float = 989e12  # H100 SXM dense bf16, datasheet
    hbm_bytes_per_s: float = 3.35e12  # H100 SXM HBM3, datasheet
    bytes_per_param: float = 2.0  # bf16
    train_mfu: float = 0.40  # assumed
    prefill_mfu: float = 0.50  # assumed
    decode_mbu: float = 0.60  # assumed
    decode_peak_tokens_per_s: float = 5000.0  # assumed, order of vLLM's offline throughput for 8B on one H100
    allreduce_bus_bytes_per_s: float = 150e9  # assumed NVLink ring bandwidth
    weight_sync_s: float = 1.0  # assumed: broadcast + vLLM reload of 16 GB

    def decode_step_s(self, batch: int) -> float:
        floor = self.params * self.bytes_per_param / (self.hbm_bytes_per_s * self.decode_mbu)
        return max(floor, batch / self.decode_peak_tokens_per_s)

    def generate_s(self, batch: int, prompt_tokens: int, new_tokens: int) -> float:
        if batch == 0:
            return 0.0
        prefill = 2 * self.params * batch * prompt_tokens / (self.peak_flops * self.prefill_mfu)
        return prefill + new_tokens * self.decode_step_s(batch)

    def logprobs_s(self, tokens: int, ranks: int, passes: int = 2) -> float:
        """``passes`` forward passes (policy and reference: 2) over ``tokens``, data-parallel over ``ranks``."""
        return passes * 2 * self.params * tokens / (self.peak_flops * self.train_mfu) / ranks

    def update_s(self, tokens: int, ranks: int) -> float:
        compute = 6 * self.params * tokens / (self.peak_flops * self.train_mfu) / ranks
        allreduce = 2 * (ranks - 1) / ranks * self.params * self.bytes_per_param / self.allreduce_bus_bytes_per_s
        return compute + allreduce


@dataclass(frozen=True)
class Workload:
    prompts_per_step: int = 128
    prompt_tokens: int = 256
    conversation_tokens: int = 512
    feedback_tokens: int = 256
    revised_share: float = 0.30

    def learner_tokens(self, agent: str) -> int:
        """Tokens each agent's learner processes per step (state + action of one sample per episode)."""
        if agent == "conversation":
            return self.prompts_per_step * (self.prompt_tokens + self.conversation_tokens)
        return self.prompts_per_step * (self.prompt_tokens + self.conversation_tokens + self.feedback_tokens)


class Busy:
    """Records (start, end) on ``time.monotonic`` (system-wide on Linux) around each simulated operation."""

    def __init__(self, time_scale: float) -> None:
        self.time_scale = time_scale
        self.spans: list[tuple[float, float]] = []

    def sleep(self, model_seconds: float) -> None:
        start = time.monotonic()
        time.sleep(model_seconds * self.time_scale)
        self.spans.append((start, time.monotonic()))


class SimGenerator:
    """A vLLM engine on one GPU: ``generate`` sleeps ``CostModel.generate_s`` for its shard."""

    def __init__(self, cost: CostModel, workload: Workload, time_scale: float) -> None:
        self.cost, self.workload, self.busy = cost, workload, Busy(time_scale)
        self.policy_version = 0

    def reset(self) -> list[tuple[float, float]]:
        spans, self.busy.spans, self.policy_version = self.busy.spans, [], 0
        return spans

    def spans(self) -> list[tuple[float, float]]:
        return self.busy.spans

    def generate(self, chats: list[Any], params: Any, min_version: int = 0) -> list[Any]:
        from waltz_ray.runtime.proxies import StaleWeightsError
        from waltz_ray.types import Completion

        if self.policy_version < min_version:
            raise StaleWeightsError(f"holds version {self.policy_version}, asked for >= {min_version}")
        self.busy.sleep(self.cost.generate_s(len(chats), self.workload.prompt_tokens, params.max_new_tokens))
        ids = (0,) * params.max_new_tokens
        return [Completion("", (), ids, policy_version=self.policy_version) for _ in chats]

    def load_state_dict(self, state: Any, policy_version: int) -> int:
        self.busy.sleep(self.cost.weight_sync_s)
        self.policy_version = policy_version
        return policy_version


class SimLearnerRank:
    """One data-parallel rank of a learner group (one GPU)."""

    def __init__(self, cost: CostModel, time_scale: float, rank: int) -> None:
        self.cost, self.busy, self.rank = cost, Busy(time_scale), rank
        self.ranks = 1

    def reset(self, ranks: int) -> list[tuple[float, float]]:
        spans, self.busy.spans, self.ranks = self.busy.spans, [], ranks
        return spans

    def spans(self) -> list[tuple[float, float]]:
        return self.busy.spans

    def logprobs(
        self, batch: dict[str, int], with_reference: bool = True, with_policy: bool = True
    ) -> tuple[None, None]:
        passes = int(with_reference) + int(with_policy)
        self.busy.sleep(self.cost.logprobs_s(batch["tokens"], self.ranks, passes))
        return None, None

    def update(
        self, batch: dict[str, int], old_logp: Any, ref_logp: Any, advantages: Any, off_policy: Any = None
    ) -> dict[str, float]:
        self.busy.sleep(self.cost.update_s(batch["tokens"], self.ranks))
        return {"loss": 0.0}

    def state_dict_for_sync(self) -> dict[str, Any]:
        return {"weights": b"\0" * 1024} if self.rank == 0 else {}  # stands for the state dict, by reference


class SimRollout:
    """``RolloutHost.run``: c0, f0, then c1 for the revised share, through the real ``RemoteGenerator`` proxies."""

    def __init__(self, workload: Workload, timeout_s: float) -> None:
        self.workload, self.timeout_s = workload, timeout_s
        self.generators: dict[str, Any] = {}

    def configure(self, pools: dict[str, list[Any]]) -> bool:
        from waltz_ray.runtime.proxies import Pool, RemoteGenerator

        self.generators = {
            a: RemoteGenerator(Pool(f"{a}_generation", actors), self.timeout_s) for a, actors in pools.items()
        }
        return True

    def run(self, prompts: int, min_versions: dict[str, int], ids: list[str]) -> tuple[Any, dict[str, int]]:
        from waltz_ray.runtime.actors import RolloutSummary
        from waltz_ray.types import GenerationParams

        w, seconds = self.workload, {}
        versions: dict[str, list[int]] = {a: [] for a in AGENTS}
        tokens = dict.fromkeys(AGENTS, 0)
        chat = [{"role": "user", "content": "p"}]
        revised = round(prompts * w.revised_share)
        stages = [
            ("conversation_generation", "conversation", prompts, w.conversation_tokens),
            ("feedback_generation", "feedback", prompts, w.feedback_tokens),
            ("revision_generation", "conversation", revised, w.conversation_tokens),
        ]
        for stage, agent, count, new_tokens in stages:
            generator = self.generators[agent]
            generator.min_version = min_versions[agent]
            start = time.monotonic()
            completions = generator.generate([chat] * count, GenerationParams(max_new_tokens=new_tokens))
            seconds[stage] = time.monotonic() - start
            versions[agent] += [c.policy_version for c in completions]
            tokens[agent] += sum(len(c.token_ids) for c in completions)
        summary = RolloutSummary({a: tuple(v) for a, v in versions.items()}, tokens, seconds)
        return summary, {"episodes": prompts}


def utilisation(spans: list[tuple[float, float]], window: tuple[float, float]) -> float:
    lo, hi = window
    busy = sum(max(0.0, min(end, hi) - max(start, lo)) for start, end in spans)
    return busy / (hi - lo)


def union_utilisation(spans: list[tuple[float, float]], window: tuple[float, float]) -> float:
    """Share of the window in which at least one of the spans was busy."""
    lo, hi = window
    clipped = sorted((max(start, lo), min(end, hi)) for start, end in spans if end > lo and start < hi)
    busy, reach = 0.0, lo
    for start, end in clipped:
        if end > reach:
            busy += end - max(start, reach)
            reach = end
    return busy / (hi - lo)


def run_config(
    actors: dict[str, Any], gen: int, ranks: int, staleness: int, args: argparse.Namespace
) -> dict[str, Any]:
    """One training run of ``args.steps`` steps on the first ``gen`` generators per pool and ``ranks`` ranks per
    learner group; the measured window starts when step 0 ends (the pipeline is full)."""
    import ray

    from waltz_ray.runtime.producer import RolloutProducer
    from waltz_ray.runtime.proxies import Pool, RemoteLearnerGroup, wait_all
    from waltz_ray.runtime.queue import EpisodeQueue, staleness_metrics
    from waltz_ray.runtime.weight_sync import ObjectStoreWeightSync
    from waltz_ray.trainer.update import concurrently

    timeout = args.timeout_s
    gen_pools = {a: Pool(f"{a}_generation", actors["gen"][a][:gen]) for a in AGENTS}
    learner_pools = {a: Pool(f"{a}_learner", actors["learn"][a][:ranks]) for a in AGENTS}
    resets = [g.reset.remote() for a in AGENTS for g in actors["gen"][a]]
    resets += [r.reset.remote(ranks) for a in AGENTS for r in actors["learn"][a]]
    resets.append(actors["rollout"].configure.remote({a: p.actors for a, p in gen_pools.items()}))
    wait_all(resets, [f"reset {i}" for i in range(len(resets))], timeout, "reset")
    learners = {a: RemoteLearnerGroup(learner_pools[a], timeout) for a in AGENTS}
    syncs = {a: ObjectStoreWeightSync(gen_pools[a], timeout) for a in AGENTS}
    gen_versions = dict.fromkeys(AGENTS, 0)  # what the driver's RemoteGenerator proxies believe each pool holds
    workload: Workload = args.workload

    def step_batch(launch: int) -> tuple[int, dict[str, int], list[str]]:
        ids = [f"{launch}-{i}" for i in range(workload.prompts_per_step)]
        return workload.prompts_per_step, dict(gen_versions), ids

    queue = EpisodeQueue(staleness + 1, staleness)  # driver.queue_capacity: max_staleness + 1
    producer = RolloutProducer(actors["rollout"], queue, step_batch, args.steps, timeout * 4)
    ends: list[float] = []
    max_lag = dict.fromkeys(AGENTS, 0.0)
    for _ in range(args.steps):
        versions = {a: learners[a].policy_version for a in AGENTS}
        record = producer.next(versions)
        producer.episodes(record)
        lags = staleness_metrics(record, versions)
        for a in AGENTS:
            max_lag[a] = max(max_lag[a], lags.get(f"staleness/{a}/max", 0.0))
        calls = [partial(learn_one, learners[a], {"tokens": workload.learner_tokens(a)}) for a in AGENTS]
        if args.sequential_learners:  # SequentialUpdater: each agent's log-probs and update in turn
            for call in calls:
                call()
        else:  # ConcurrentUpdater: both groups at once
            concurrently(calls, "learner-update")
        for a in AGENTS:  # PoolWeightSync.sync
            state = learners[a].state_dict_ref()
            syncs[a].push(state, learners[a].policy_version)
            gen_versions[a] = learners[a].policy_version
        ends.append(time.monotonic())
    producer.drain()
    window = (ends[0], ends[-1])
    spans_gen = ray.get([g.spans.remote() for a in AGENTS for g in gen_pools[a].actors], timeout=timeout)
    spans_learn = ray.get([r.spans.remote() for a in AGENTS for r in learner_pools[a].actors], timeout=timeout)
    model_s = (window[1] - window[0]) / args.time_scale
    episodes = (args.steps - 1) * workload.prompts_per_step
    gpus = 2 * gen + 2 * ranks
    gen_s, learn_s = analytic_step(args.cost, workload, gen, ranks, args.sequential_learners)
    bound = gen_s + learn_s if staleness == 0 else max(gen_s, learn_s)
    return {
        "over_bound": model_s / (args.steps - 1) / bound,
        "analytic_gen_side_s": gen_s,
        "analytic_learner_side_s": learn_s,
        "gen_per_pool": gen,
        "ranks_per_learner": ranks,
        "gpus": gpus,
        "max_staleness": staleness,
        "model_s_per_step": model_s / (args.steps - 1),
        "gen_utilisation": sum(utilisation(s, window) for s in spans_gen) / len(spans_gen),
        "learner_utilisation": sum(utilisation(s, window) for s in spans_learn) / len(spans_learn),
        "learner_side_busy": union_utilisation([span for s in spans_learn for span in s], window),
        "episodes_per_hour": episodes / model_s * 3600,
        "episodes_per_gpu_hour": episodes / model_s * 3600 / gpus,
        "max_lag": max_lag,
        "dropped_stale": queue.dropped_stale,
    }


def learn_one(learner: Any, batch: dict[str, int]) -> None:
    """One agent's part of ``AgentUpdate`` as remote calls: log-probs, then the update."""
    old, ref = learner.logprobs(batch, True)
    learner.update(batch, old, ref, None)


def analytic_step(
    cost: CostModel, w: Workload, gen: int, ranks: int, sequential_learners: bool = False
) -> tuple[float, float]:
    """(generation side, learner side) model seconds of one step, from the cost model alone (no runtime). The
    learner side is the longer agent's log-probs and update when the groups update at once, their sum otherwise,
    plus the two weight pushes (one after the other)."""
    per_shard = math.ceil(w.prompts_per_step / gen)
    revised = math.ceil(round(w.prompts_per_step * w.revised_share) / gen)
    gen_s = (
        cost.generate_s(per_shard, w.prompt_tokens, w.conversation_tokens)
        + cost.generate_s(per_shard, w.prompt_tokens, w.feedback_tokens)
        + cost.generate_s(revised, w.prompt_tokens, w.conversation_tokens)
    )
    per_agent = [
        cost.logprobs_s(w.learner_tokens(a), ranks) + cost.update_s(w.learner_tokens(a), ranks) for a in AGENTS
    ]
    learn_s = sum(per_agent) if sequential_learners else max(per_agent)
    return gen_s, learn_s + 2 * cost.weight_sync_s


def planning_table(cost: CostModel, w: Workload, sequential_learners: bool = False) -> str:
    """For each learner size, the fewest generation GPUs per pool whose generation side fits under the learner side
    (so with max_staleness >= 1 the learners never wait)."""
    lines = [
        "| learner GPUs per agent | learner side s/step | fewest gen GPUs per pool that keep up | gen side s/step |",
        "|---|---|---|---|",
    ]
    for ranks in (1, 2, 4, 8, 16):
        learn = analytic_step(cost, w, 1, ranks, sequential_learners)[1]
        fits = [g for g in (1, 2, 4, 8, 16, 32, 64) if analytic_step(cost, w, g, ranks)[0] <= learn]
        if fits:
            g = fits[0]
            lines.append(f"| {ranks} | {learn:.1f} | {g} | {analytic_step(cost, w, g, ranks)[0]:.1f} |")
        else:
            floor = analytic_step(cost, w, 64, ranks)[0]
            lines.append(f"| {ranks} | {learn:.1f} | none (decode floor: {floor:.1f} s at 64) | - |")
    return "\n".join(lines)


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| gen GPUs/pool | learner GPUs/agent | GPUs | max_staleness | model s/step | gen util | learner util "
        "| learner side busy | episodes/h | episodes/GPU-h | max lag c / f | dropped stale | x bound |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['gen_per_pool']} | {r['ranks_per_learner']} | {r['gpus']} | {r['max_staleness']} "
            f"| {r['model_s_per_step']:.1f} | {r['gen_utilisation']:.2f} | {r['learner_utilisation']:.2f} "
            f"| {r['learner_side_busy']:.2f} "
            f"| {r['episodes_per_hour']:.0f} | {r['episodes_per_gpu_hour']:.0f} "
            f"| {r['max_lag']['conversation']:g} / {r['max_lag']['feedback']:g} | {r['dropped_stale']} "
            f"| {r['over_bound']:.2f} |"
        )
    return "\n".join(lines)


def replace_steps(args: argparse.Namespace, steps: int) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(args), "steps": steps})


def parse_sizes(text: str) -> list[tuple[int, int]]:
    sizes = []
    for part in text.split(","):
        gen, _, ranks = part.partition(":")
        sizes.append((int(gen), int(ranks or gen)))
    return sizes


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1:1,2:2,4:4,8:8", help="gen actors per pool : learner ranks per agent")
    parser.add_argument("--staleness", default="0,1,2", help="max_staleness values")
    parser.add_argument("--steps", type=int, default=6, help="steps per run (the first fills the pipeline, untimed)")
    parser.add_argument("--time-scale", type=float, default=0.01, help="wall seconds per model second")
    parser.add_argument("--prompts-per-step", type=int, default=128)
    parser.add_argument("--timeout-s", type=float, default=120.0, help="remote call timeout (wall seconds)")
    parser.add_argument("--out", default=None, help="work dir for scaling.json; default a temp dir")
    parser.add_argument(
        "--sequential-learners",
        action="store_true",
        help="update the two learner groups one after the other (runtime.concurrent_updates=false)",
    )
    parser.add_argument("--reduced", action="store_true", help="sizes 1:1,2:2, staleness 0,1, 3 steps (test suite)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.reduced:
        args.sizes, args.staleness, args.steps = "1:1,2:2", "0,1", 3
    if args.steps < 2:
        raise SystemExit("--steps must be >= 2 (step 0 fills the pipeline and is not measured)")
    sizes, stalenesses = parse_sizes(args.sizes), [int(s) for s in args.staleness.split(",")]
    cost = args.cost = CostModel()
    args.workload = replace(Workload(), prompts_per_step=args.prompts_per_step)
    import ray

    from waltz_ray.runtime.driver import ray_session

    with tempfile.TemporaryDirectory(prefix="waltz-scaling-") as tmp, ray_session():
        work = Path(args.out) if args.out else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        top_gen, top_ranks = max(g for g, _ in sizes), max(r for _, r in sizes)
        zero = {"num_cpus": 0}
        gen_cls, learn_cls, rollout_cls = (ray.remote(**zero)(c) for c in (SimGenerator, SimLearnerRank, SimRollout))
        actors: dict[str, Any] = {
            "gen": {a: [gen_cls.remote(cost, args.workload, args.time_scale) for _ in range(top_gen)] for a in AGENTS},
            "learn": {a: [learn_cls.remote(cost, args.time_scale, i) for i in range(top_ranks)] for a in AGENTS},
            "rollout": rollout_cls.remote(args.workload, args.timeout_s),
        }
        count = 2 * top_gen + 2 * top_ranks + 1
        start = time.monotonic()
        ray.get([g.spans.remote() for a in AGENTS for g in actors["gen"][a]], timeout=300)
        ray.get([r.spans.remote() for a in AGENTS for r in actors["learn"][a]], timeout=300)
        print(f"{count} simulated actors up in {time.monotonic() - start:.1f} s", flush=True)
        # untimed: the actors' first calls import the runtime modules (seconds here, model minutes once scaled)
        run_config(actors, 1, 1, 1, replace_steps(args, 2))
        rows = []
        for gen, ranks in sizes:
            for staleness in stalenesses:
                row = run_config(actors, gen, ranks, staleness, args)
                rows.append(row)
                print(
                    f"gen {gen}/pool, learners {ranks}/agent, max_staleness {staleness}: "
                    f"{row['model_s_per_step']:.1f} model s/step, gen util {row['gen_utilisation']:.2f}, "
                    f"learner util {row['learner_utilisation']:.2f}",
                    flush=True,
                )
        largest = [r for r in rows if (r["gen_per_pool"], r["ranks_per_learner"]) == sizes[-1]]
        best = max(r["learner_utilisation"] for r in largest)
        load = os.getloadavg()
        (work / "scaling.json").write_text(
            json.dumps(
                {
                    "cost_model": asdict(cost),
                    "workload": asdict(args.workload),
                    "time_scale": args.time_scale,
                    "sequential_learners": args.sequential_learners,
                    "steps": args.steps,
                    "load_average": load,
                    "rows": rows,
                    "max_utilisation": best,
                },
                indent=2,
            )
        )
    print(table(rows))
    print()
    print(planning_table(cost, args.workload, args.sequential_learners))
    loads = " ".join(f"{x:.2f}" for x in load)
    print(f"time_scale={args.time_scale} steps={args.steps} sequential_learners={args.sequential_learners}")
    print(f"load_average={loads}")
    print(f"max_utilisation={best:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))  # run from a checkout without installing
    sys.exit(main())
