"""A worker node lost mid-run, on a real multi-node Ray (``ray.cluster_utils.Cluster``: a head and two worker
nodes, all on 127.0.0.1). The conversation generation pool lives on a worker node (custom resource ``gen_node``,
which both workers advertise); everything else is pinned to the head. Removing the pool's node kills its actor;
Ray reschedules the placement-group bundle on the other worker and restarts the actor there, the driver pushes it the
current weights, the lost rollout is generated again, and the run finishes equal to an undisturbed one.

Its own module: it needs a Ray of its own (the other modules' local Ray is shut down by then).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.tiny_world import WALL_CLOCK, tiny_config

HEAD = "{head_node: 1}"
PINNED = [
    f"runtime.{pool}.resources={HEAD}" for pool in ("feedback_pool", "judge_pool", "learner_pool", "reference_pool")
] + [f"runtime.rollout_resources={HEAD}", "runtime.conversation_pool.resources={gen_node: 1}"]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "resources": {"head_node": 100}})
    workers = [cluster.add_node(num_cpus=1, resources={"gen_node": 1}) for _ in range(2)]
    ray.init(address=cluster.address)
    yield cluster, workers
    ray.shutdown()
    cluster.shutdown()


def rows(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_losing_the_node_of_a_generation_pool_is_survived(cluster: Any, tiny_env: Path, tmp_path: Path) -> None:
    import ray

    from waltz_ray.runtime.driver import ray_trainer

    cluster_, workers = cluster
    config = tiny_config(*PINNED)
    ray_trainer(config, tmp_path / "clean").run()

    removed: list[str] = []

    def node_loss(trainer: Any, step: int, when: str) -> None:
        if when == "before" and step == 3:  # stage 2: the conversation agent has been updated once
            pg = trainer.parts.runtime.placement_groups[0]  # conversation_generation's
            node_id = ray.util.placement_group_table(pg)["bundles_to_node_id"][0]
            (node,) = [w for w in workers if w.node_id == node_id]
            cluster_.remove_node(node)
            removed.append(node_id)

    ray_trainer(config, tmp_path / "lost", hooks=[node_loss]).run()
    assert removed
    ours, theirs = rows(tmp_path / "lost"), rows(tmp_path / "clean")
    assert [r["step"] for r in ours] == [r["step"] for r in theirs]
    for mine, ref in zip(ours, theirs, strict=True):
        for key, value in ref.items():
            if not key.startswith((*WALL_CLOCK, "faults/")):
                assert mine[key] == value, (mine["step"], key)
    assert ours[-2]["faults/rollout_relaunches"] >= 1 and ours[-2]["faults/generator_refreshes"] >= 1
    print("node loss:", {k: v for k, v in ours[-2].items() if k.startswith("faults/")})
