"""All topology in one function: who runs where, with which resources (``build_topology``).

One placement group per pool (PACK), the conversation and feedback generation pools, the judge pool, a reference
pool per agent (``runtime.reference_on: rollout``), one learner group per agent, the rollout actor and each agent's
weight sync. The CPU/GPU budget is checked against the cluster
before anything is reserved: fractional CPUs that do not fit make Ray wait forever instead of failing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from waltz_ray.checkpoint import ResumePoint
from waltz_ray.config import GenerationPoolConfig, WaltzConfig
from waltz_ray.runtime.actors import (
    DeepSpeedLearnerHost,
    GeneratorHost,
    JudgeHost,
    ReferenceHost,
    RolloutHost,
    TorchLearnerHost,
)
from waltz_ray.runtime.proxies import Pool, RemoteGenerator, RemoteJudge, RemoteReference, wait_all
from waltz_ray.runtime.weight_sync import NCCLWeightSync, ObjectStoreWeightSync, WeightSync
from waltz_ray.types import AGENTS, AgentName

log = logging.getLogger(__name__)
_EPS = 1e-9


class ResourceBudgetError(RuntimeError):
    """The pools ask for more CPUs/GPUs/custom resources than the cluster has (Ray would otherwise wait forever)."""


class PlacementTimeoutError(RuntimeError):
    """A pool's placement group was not ready in time; the message names the pool and what it asked for."""


@dataclass(frozen=True)
class PoolSpec:
    """What one pool asks for: ``num_actors`` actors of ``num_cpus`` CPUs, ``num_gpus`` GPUs and the custom Ray
    ``resources`` (which steer the pool onto the node types that advertise them) each."""

    name: str
    num_actors: int
    num_cpus: float
    num_gpus: float = 0.0
    tensor_parallel_size: int = 1
    resources: Mapping[str, float] = field(default_factory=dict)

    @property
    def bundle(self) -> dict[str, float]:
        amounts = {"CPU": self.num_cpus, "GPU": self.num_gpus, **self.resources}
        return {k: v for k, v in amounts.items() if v > 0}

    def describe(self) -> str:
        return f"{self.name}: {self.num_actors} x {self.bundle or '{}'}"


def _generation_spec(name: str, pool: GenerationPoolConfig) -> PoolSpec:
    tp = pool.tensor_parallel_size
    if tp > 1 and pool.num_gpus < tp:
        raise ResourceBudgetError(
            f"{name}: tensor_parallel_size {tp} needs num_gpus >= {tp} per actor (every tensor-parallel rank of a "
            f"vLLM engine runs on its actor's GPUs); got num_gpus {pool.num_gpus}"
        )
    return PoolSpec(name, pool.num_actors, pool.num_cpus, pool.num_gpus, tp, dict(pool.resources))


def idle_agents(config: WaltzConfig) -> tuple[AgentName, ...]:
    """Agents whose generation and reference pools would never be called: the feedback agent of the single-model
    baseline (``algorithm.mode: single`` plays no feedback turn). Its learner still starts: it holds the weights a
    checkpoint saves."""
    return ("feedback",) if config.algorithm.mode == "single" else ()


def pool_specs(config: WaltzConfig) -> list[PoolSpec]:
    """Every pool of the run, generation pools first, then the judge pool, the reference pools (reference_on:
    rollout) and one learner group per agent; no generation or reference pool for an idle agent (``idle_agents``)."""
    idle = idle_agents(config)
    rt, learner = config.runtime, config.learner
    if learner.backend == "torch" and learner.num_workers > 1:
        raise ResourceBudgetError(
            f"learner.num_workers {learner.num_workers} needs learner.backend deepspeed (the torch backend is one "
            "TorchLearner actor per agent)"
        )
    ranks = learner.num_workers
    jp, lp, rp = rt.judge_pool, rt.learner_pool, rt.reference_pool
    generation = {"conversation": rt.conversation_pool, "feedback": rt.feedback_pool}
    return [
        *(_generation_spec(f"{agent}_generation", generation[agent]) for agent in AGENTS if agent not in idle),
        PoolSpec("judge", jp.num_actors, jp.num_cpus, jp.num_gpus, resources=dict(jp.resources)),
        *(
            PoolSpec(f"{agent}_reference", rp.num_actors, rp.num_cpus, rp.num_gpus, resources=dict(rp.resources))
            for agent in AGENTS
            if rt.reference_on == "rollout" and agent not in idle
        ),
        *(PoolSpec(f"{a}_learner", ranks, lp.num_cpus, lp.num_gpus, resources=dict(lp.resources)) for a in AGENTS),
    ]


def check_resources(specs: list[PoolSpec], available: Mapping[str, float]) -> None:
    """Raise ``ResourceBudgetError`` when the pools' total CPUs, GPUs or custom resources exceed ``available`` (the
    cluster's); a custom resource that no node has is named with the first pool that asks for it."""
    for spec in specs:
        for name in sorted(spec.bundle.keys() - {"CPU", "GPU"}):
            if float(available.get(name, 0.0)) <= 0:
                raise ResourceBudgetError(
                    f"pool {spec.name} asks for the custom resource {name!r} but no node of the cluster has it; Ray "
                    f"would wait forever. Start the node type that advertises {name!r} (cluster/README.md; on an "
                    f"autoscaling cluster wait until its nodes have joined: `ray status`) or drop it from that "
                    f"pool's runtime.<pool>.resources:\n  {spec.describe()}"
                )
    custom = sorted({name for s in specs for name in s.bundle} - {"CPU", "GPU"})
    for resource in ("CPU", "GPU", *custom):
        asked = sum(s.num_actors * s.bundle.get(resource, 0.0) for s in specs)
        have = float(available.get(resource, 0.0))
        if asked > have + _EPS:
            lines = "\n".join(f"  {s.describe()}" for s in specs)
            knob = f"num_{resource.lower()}s" if resource in ("CPU", "GPU") else f"resources.{resource}"
            raise ResourceBudgetError(
                f"the pools ask for {asked:g} {resource} in total but the cluster has {have:g}; Ray would wait "
                f"forever. Lower runtime.<pool>.num_actors / {knob} or add nodes:\n{lines}"
            )


def _cluster_resources() -> dict[str, float]:
    return dict(ray.cluster_resources())  # type: ignore[no-untyped-call]


def reserve(spec: PoolSpec, timeout_s: float) -> Any:
    """A PACK placement group with one bundle per actor, ready within ``timeout_s`` (None for a zero-resource pool)."""
    if not spec.bundle:
        return None
    pg = placement_group([dict(spec.bundle) for _ in range(spec.num_actors)], strategy="PACK")
    ready = ray.wait([pg.ready()], timeout=timeout_s)[0]
    if not ready:
        remove_placement_group(pg)
        raise PlacementTimeoutError(
            f"placement group of pool {spec.describe()} was not ready within {timeout_s:g} s "
            f"(cluster has {_cluster_resources()}, available now {ray.available_resources()})"  # type: ignore[no-untyped-call]
        )
    return pg


def _placed(spec: PoolSpec, pg: Any, index: int, max_restarts: int = 0) -> Any:
    """``ray.remote`` options for actor ``index`` of a pool: its resources, its bundle, its restart budget."""
    opts: dict[str, Any] = {"num_cpus": spec.num_cpus, "num_gpus": spec.num_gpus, "max_restarts": max_restarts}
    if pg is not None:
        opts["scheduling_strategy"] = PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=index)
    return opts


@dataclass
class Topology:
    """Handles of everything a Ray run uses; ``shutdown`` kills the actors and frees the placement groups."""

    config: WaltzConfig
    model_paths: dict[AgentName, str]  # each policy's weights: the configured model, or a resume point's folder
    reference_paths: dict[AgentName, str]
    policy_versions: dict[AgentName, int]
    resume: bool = False
    generation: dict[AgentName, Pool] = field(default_factory=dict)
    learners: dict[AgentName, Pool] = field(default_factory=dict)
    judge: Pool | None = None
    references: dict[AgentName, Pool] = field(default_factory=dict)
    rollout: Any = None
    weight_sync: dict[AgentName, WeightSync] = field(default_factory=dict)
    placement_groups: list[Any] = field(default_factory=list)

    def actors(self) -> list[Any]:
        pools = [
            *self.generation.values(),
            *self.references.values(),
            *self.learners.values(),
            *([self.judge] if self.judge else []),
        ]
        return [a for pool in pools for a in pool.actors] + ([self.rollout] if self.rollout is not None else [])

    def shutdown(self) -> None:
        for actor in self.actors():
            try:
                ray.kill(actor, no_restart=True)
            except Exception as exc:  # already gone: nothing to free
                log.debug("kill %s: %s", actor, exc)
        for pg in self.placement_groups:
            remove_placement_group(pg)
        self.generation, self.references, self.learners, self.judge = {}, {}, {}, None
        self.rollout, self.placement_groups = None, []


def uses_nccl(config: WaltzConfig, agent: AgentName) -> bool:
    """NCCL weight sync for vLLM pools on GPUs with GPU learners; the object store everywhere else."""
    rt = config.runtime
    pool = rt.conversation_pool if agent == "conversation" else rt.feedback_pool
    engine = getattr(config.agents, agent).engine
    return engine == "vllm" and pool.num_gpus > 0 and rt.learner_pool.num_gpus > 0


def build_topology(config: WaltzConfig, *, check: bool = True, resume: ResumePoint | None = None) -> Topology:
    """Create every pool of the run from ``config`` and wait until all actors are loaded (bounded by
    ``runtime.remote_timeout_s``). ``check=False`` skips the up-front budget check (autoscaling clusters, where
    the placement-group timeout then bounds the wait). ``resume``: generation pools and learners load the resume
    point's weights (and the learners its optimizer state) before anything generates. On any failure, whatever was
    created is torn down."""
    from waltz_ray.worlds import resolve_model_path

    specs = {s.name: s for s in pool_specs(config)}
    if check:
        check_resources(list(specs.values()), _cluster_resources())
    if resume is None:
        paths = {a: resolve_model_path(getattr(config.agents, a).model_path, config) for a in AGENTS}
        topo = Topology(config, paths, dict(paths), {a: 0 for a in AGENTS})
    else:
        topo = Topology(
            config,
            {a: resume.agent_path(a) for a in AGENTS},
            {a: resume.state.reference_paths[a] for a in AGENTS},
            {a: resume.state.policy_versions[a] for a in AGENTS},
            resume=True,
        )
    try:
        _build(topo, specs)
    except BaseException:
        topo.shutdown()
        raise
    return topo


def _build(topo: Topology, specs: dict[str, PoolSpec]) -> None:
    config, timeout = topo.config, topo.config.runtime.remote_timeout_s
    groups: dict[str, Any] = {}
    for name, spec in specs.items():  # one at a time, recorded at once: a later timeout frees the earlier ones
        groups[name] = reserve(spec, timeout)
        if groups[name] is not None:
            topo.placement_groups.append(groups[name])
    waits: list[tuple[Any, str]] = []
    for agent in AGENTS:
        if f"{agent}_generation" not in specs:  # an idle agent: a pool without actors, never called
            topo.generation[agent] = Pool(f"{agent}_generation", [])
            continue
        spec = specs[f"{agent}_generation"]
        topo.generation[agent], ready = _generation_pool(
            config, spec, groups[spec.name], topo.model_paths[agent], agent, topo.policy_versions[agent]
        )
        waits += ready
    topo.judge, ready = _judge_pool(config, specs["judge"], groups["judge"])
    waits += ready
    for agent in AGENTS:
        if f"{agent}_reference" in specs:
            spec = specs[f"{agent}_reference"]
            topo.references[agent], ready = _reference_pool(
                config, spec, groups[spec.name], topo.model_paths[agent], agent
            )
            waits += ready
    for agent in AGENTS:
        spec = specs[f"{agent}_learner"]
        topo.learners[agent], ready = _learner_group(config, spec, groups[spec.name], topo, agent)
        waits += ready
    wait_all([r for r, _ in waits], [label for _, label in waits], timeout, "starting the Ray topology")
    rollout_host: Any = ray.remote(num_cpus=0)(RolloutHost)  # it only waits on the pools: no CPU reserved
    topo.rollout = rollout_host.options(max_restarts=0, resources=dict(config.runtime.rollout_resources)).remote(
        RemoteGenerator(topo.generation["conversation"], timeout),
        RemoteGenerator(topo.generation["feedback"], timeout),
        RemoteJudge(topo.judge, timeout),
        {agent: RemoteReference(pool, timeout) for agent, pool in topo.references.items()},
    )
    wait_all([topo.rollout.ready.remote()], ["rollout"], timeout, "starting the rollout actor")
    for agent in AGENTS:
        pool = topo.generation[agent]
        if uses_nccl(config, agent) and pool.actors:
            tp = specs[pool.name].tensor_parallel_size
            topo.weight_sync[agent] = NCCLWeightSync(pool, topo.learners[agent].actors[0], tp, timeout)
        else:
            topo.weight_sync[agent] = ObjectStoreWeightSync(pool, timeout)


Started = tuple[Pool, list[tuple[Any, str]]]  # a pool and the (ref, label) pairs that say its actors are loaded


def _generation_pool(
    config: WaltzConfig, spec: PoolSpec, pg: Any, model_path: str, agent: AgentName, version: int
) -> Started:
    agent_cfg = getattr(config.agents, agent)
    host: Any = ray.remote(num_cpus=spec.num_cpus, num_gpus=spec.num_gpus)(GeneratorHost)
    pool, waits = Pool(spec.name, []), []
    # a restarted vLLM actor cannot rejoin an NCCL weight group: with NCCL sync its death stops the run (resume)
    restarts = 0 if uses_nccl(config, agent) else config.runtime.max_actor_restarts
    for i in range(spec.num_actors):
        actor = host.options(**_placed(spec, pg, i, restarts)).remote(
            agent_cfg.engine,
            model_path,
            agent_cfg.dtype,
            num_threads=config.runtime.num_threads,
            num_cpus=spec.num_cpus,
            tensor_parallel_size=spec.tensor_parallel_size,
            seed=config.seed,
            nccl=uses_nccl(config, agent),
            policy_version=version,
            max_model_len=agent_cfg.max_model_len,
            gpu_memory_utilization=agent_cfg.gpu_memory_utilization,
        )
        pool.actors.append(actor)
        waits.append((actor.get_policy_version.remote(), pool.label(i)))
    return pool, waits


def _judge_pool(config: WaltzConfig, spec: PoolSpec, pg: Any) -> Started:
    host: Any = ray.remote(num_cpus=spec.num_cpus, num_gpus=spec.num_gpus)(JudgeHost)
    pool, waits = Pool(spec.name, []), []
    for i in range(spec.num_actors):
        actor = host.options(**_placed(spec, pg, i)).remote(config, num_cpus=spec.num_cpus)
        pool.actors.append(actor)
        waits.append((actor.ready.remote(), pool.label(i)))
    return pool, waits


def _reference_pool(config: WaltzConfig, spec: PoolSpec, pg: Any, model_path: str, agent: AgentName) -> Started:
    host: Any = ray.remote(num_cpus=spec.num_cpus, num_gpus=spec.num_gpus)(ReferenceHost)
    pool, waits = Pool(spec.name, []), []
    dtype = getattr(config.agents, agent).dtype
    for i in range(spec.num_actors):
        actor = host.options(**_placed(spec, pg, i)).remote(
            model_path,
            dtype,
            config.learner.micro_batch_size,
            from_first_action=config.learner.logits_from_first_action,
            num_threads=config.runtime.num_threads,
            num_cpus=spec.num_cpus,
        )
        pool.actors.append(actor)
        waits.append((actor.ready.remote(), pool.label(i)))
    return pool, waits


def _learner_group(config: WaltzConfig, spec: PoolSpec, pg: Any, topo: Topology, agent: AgentName) -> Started:
    """One agent's learner actors and the refs that say they are loaded (and, on resume, restored). DeepSpeed: rank
    0 picks the address."""
    pool, dtype = Pool(spec.name, []), getattr(config.agents, agent).dtype
    model_path, reference_path = topo.model_paths[agent], topo.reference_paths[agent]
    threads, timeout = config.runtime.num_threads, config.runtime.remote_timeout_s
    if config.learner.backend == "torch":
        host: Any = ray.remote(num_cpus=spec.num_cpus, num_gpus=spec.num_gpus)(TorchLearnerHost)
        actor = host.options(**_placed(spec, pg, 0)).remote(
            model_path,
            dtype,
            config.learner,
            config.algorithm,
            num_threads=threads,
            num_cpus=spec.num_cpus,
            reference_path=reference_path,
            resume=topo.resume,
        )
        pool.actors.append(actor)
        return pool, [(actor.get_policy_version.remote(), pool.label(0))]
    ranks: Any = ray.remote(num_cpus=spec.num_cpus, num_gpus=spec.num_gpus)(DeepSpeedLearnerHost)
    for i in range(spec.num_actors):
        pool.actors.append(ranks.options(**_placed(spec, pg, i)).remote(num_threads=threads, num_cpus=spec.num_cpus))
    rank0 = [pool.actors[0].master_address.remote()]
    address, port = wait_all(rank0, [pool.label(0)], timeout, "learner rendezvous")[0]
    setups = [
        actor.setup.remote(
            model_path,
            rank,
            spec.num_actors,
            address,
            port,
            config.learner,
            config.algorithm,
            dtype,
            timeout,
            reference_path,
        )
        for rank, actor in enumerate(pool.actors)
    ]
    waits = [(ref, pool.label(rank)) for rank, ref in enumerate(setups)]
    if topo.resume:  # actor calls run in order: each rank restores right after its setup (collective)
        waits += [(a.load_state.remote(model_path), f"{pool.label(r)} restore") for r, a in enumerate(pool.actors)]
    return pool, waits
