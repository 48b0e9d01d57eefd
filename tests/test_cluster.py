"""Custom Ray resources steer pools onto node types; the cluster files in cluster/ agree with configs/llama8b.yaml.

Pure functions and YAML only: no Ray cluster, no network.
"""

from __future__ import annotations

import pytest

from waltz_ray.config import ConfigError, load_config


def test_custom_resources_go_into_every_pools_bundle() -> None:
    from waltz_ray.runtime.topology import pool_specs

    config = load_config(
        None,
        [
            "runtime.conversation_pool.resources={generation_node: 1}",
            "runtime.feedback_pool.resources={generation_node: 1}",
            "runtime.judge_pool.resources={judge_node: 0.5}",
            "runtime.learner_pool.resources={learner_node: 1, spare: 0}",
        ],
    )
    bundles = {s.name: s.bundle for s in pool_specs(config)}
    assert bundles == {
        "conversation_generation": {"CPU": 0.25, "generation_node": 1.0},
        "feedback_generation": {"CPU": 0.25, "generation_node": 1.0},
        "judge": {"CPU": 0.25, "judge_node": 0.5},  # a --set into judge_pool builds it from PoolConfig's defaults
        "conversation_learner": {"CPU": 0.25, "learner_node": 1.0},  # a zero amount is left out, like CPU/GPU
        "feedback_learner": {"CPU": 0.25, "learner_node": 1.0},
    }


def test_budget_names_the_pool_and_the_custom_resource_the_cluster_lacks() -> None:
    from waltz_ray.runtime.topology import ResourceBudgetError, check_resources, pool_specs

    config = load_config(None, ["runtime.judge_pool.resources={judge_node: 1}"])
    specs = pool_specs(config)
    check_resources(specs, {"CPU": 2.0, "judge_node": 1.0})  # 5 pools x 0.25 = 1.25 CPU
    with pytest.raises(ResourceBudgetError, match=r"pool judge asks for the custom resource 'judge_node' but no node"):
        check_resources(specs, {"CPU": 2.0})
    with pytest.raises(ResourceBudgetError, match=r"pool judge asks for the custom resource 'judge_node'"):
        check_resources(specs, {"CPU": 2.0, "judge_node": 0.0})


def test_budget_sums_custom_resources_over_actors_and_pools() -> None:
    from waltz_ray.runtime.topology import ResourceBudgetError, check_resources, pool_specs

    both = "{gpu_node: 1}"
    config = load_config(
        None,
        [
            f"runtime.conversation_pool.resources={both}",
            f"runtime.feedback_pool.resources={both}",
            "runtime.feedback_pool.num_actors=2",
        ],
    )
    specs = pool_specs(config)
    check_resources(specs, {"CPU": 2.0, "gpu_node": 3.0})  # 1 conversation actor + 2 feedback actors = 3
    with pytest.raises(ResourceBudgetError, match=r"3 gpu_node in total but the cluster has 2") as err:
        check_resources(specs, {"CPU": 2.0, "gpu_node": 2.0})
    assert "resources.gpu_node" in str(err.value)
    assert "feedback_generation: 2 x {'CPU': 0.25, 'gpu_node': 1.0}" in str(err.value)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("{judge_node: -1}", "resource 'judge_node' must be a finite amount >= 0"),
        ("{judge_node: .nan}", "resource 'judge_node' must be a finite amount >= 0"),
        ("{judge_node: 1.5}", "amounts above 1 must be whole numbers"),
        ("{GPU: 1}", "'GPU' is not a custom resource; set it with num_cpus / num_gpus"),
    ],
)
def test_bad_custom_resources_are_named(value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=r"runtime\.judge_pool\.resources") as err:
        load_config(None, [f"runtime.judge_pool.resources={value}"])
    assert message in str(err.value)
