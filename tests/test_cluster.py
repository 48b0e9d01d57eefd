"""Custom Ray resources steer pools onto node types; the cluster files in cluster/ agree with configs/llama8b.yaml.

Pure functions and YAML only: no Ray cluster, no network.
"""

from __future__ import annotations

import json
import re
import runpy
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

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
        "judge": {"CPU": 0.1, "judge_node": 0.5},  # a --set into judge_pool keeps its 0.1 CPU default
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


# --------------------------------------------------------------------------------------------- the cluster files
ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
LLAMA8B = ROOT / "configs" / "llama8b.yaml"
TRAIN_COMMAND = "waltz-ray train --config configs/llama8b.yaml --out /mnt/runs/llama8b"
CLUSTER_FILES = ["aws.yaml", "gcp.yaml", "kuberay/raycluster.yaml"]
POOL_NODE_TYPES = {  # pool -> the node type it must land on, and whether that type is spot (cluster/README.md)
    "conversation_generation": ("generation", True),
    "feedback_generation": ("generation", True),
    "judge": ("judge", True),
    "conversation_learner": ("learner", False),
    "feedback_learner": ("learner", False),
}


@dataclass(frozen=True)
class NodeType:
    """One node type as Ray sees it: how many nodes at most, and what each advertises."""

    name: str
    count: int
    cpus: float
    gpus: float
    custom: dict[str, float]
    spot: bool


def _yaml(relative: str) -> Any:
    return yaml.safe_load((CLUSTER / relative).read_text(encoding="utf-8"))


def _vm_node_types(relative: str) -> dict[str, NodeType]:
    """available_node_types of a Ray autoscaler file; spot = AWS spot market or a GCP Spot/preemptible VM."""
    config = _yaml(relative)
    types = {}
    for name, spec in config["available_node_types"].items():
        res, node = dict(spec["resources"]), spec["node_config"]
        market = node.get("InstanceMarketOptions", {}).get("MarketType")
        scheduling = node.get("scheduling", {})
        spot = market == "spot" or scheduling.get("provisioningModel") == "SPOT" or bool(scheduling.get("preemptible"))
        count = 1 if name == config["head_node_type"] else spec["max_workers"]
        custom = {k: float(v) for k, v in res.items() if k not in ("CPU", "GPU")}
        types[name] = NodeType(name, count, float(res["CPU"]), float(res["GPU"]), custom, spot)
    return types


def _kuberay_node_types(relative: str) -> dict[str, NodeType]:
    """Head and worker groups of the RayCluster; Ray's CPUs/GPUs come from the first (Ray) container's limits
    unless rayStartParams override them, custom resources from rayStartParams.resources (KubeRay's quoted JSON)."""
    cluster = next(d for d in yaml.safe_load_all((CLUSTER / relative).read_text()) if d["kind"] == "RayCluster")
    groups = [("head", 1, cluster["spec"]["headGroupSpec"])]
    groups += [(g["groupName"], g["maxReplicas"], g) for g in cluster["spec"]["workerGroupSpecs"]]
    types = {}
    for name, count, group in groups:
        params, pod = group["rayStartParams"], group["template"]["spec"]
        limits = pod["containers"][0]["resources"]["limits"]
        custom = json.loads(json.loads(params["resources"])) if "resources" in params else {}
        spot = pod.get("nodeSelector", {}).get("cloud.google.com/gke-spot") == "true"
        cpus = float(params.get("num-cpus", limits["cpu"]))
        gpus = float(params.get("num-gpus", limits.get("nvidia.com/gpu", 0)))
        types[name] = NodeType(name, count, cpus, gpus, {k: float(v) for k, v in custom.items()}, spot)
    return types


def _node_types(relative: str) -> dict[str, NodeType]:
    return _kuberay_node_types(relative) if relative.startswith("kuberay/") else _vm_node_types(relative)


def _totals(types: dict[str, NodeType]) -> dict[str, float]:
    """What ``ray.cluster_resources()`` reports once every node type runs at its maximum count."""
    totals: dict[str, float] = {"CPU": 0.0, "GPU": 0.0}
    for t in types.values():
        for name, amount in {"CPU": t.cpus, "GPU": t.gpus, **t.custom}.items():
            totals[name] = totals.get(name, 0.0) + t.count * amount
    return totals


def test_llama8b_is_the_paper_setup_on_4_nodes_of_8_gpus() -> None:
    from waltz_ray.runtime.topology import pool_specs

    config = load_config(LLAMA8B)
    for agent in (config.agents.conversation, config.agents.feedback):
        assert (agent.model_path, agent.engine, agent.dtype) == ("meta-llama/Llama-3.1-8B-Instruct", "vllm", "bfloat16")
    assert (config.learner.backend, config.learner.zero_stage, config.learner.num_workers) == ("deepspeed", 3, 4)
    assert config.judge.kind == "http" and config.judge.model
    gpus = {s.name: s.num_actors * s.num_gpus for s in pool_specs(config)}
    assert gpus == {
        "conversation_generation": 8.0,
        "feedback_generation": 8.0,
        "judge": 0.0,  # HTTP clients; the judge model has a node of 8 GPUs outside Ray
        "conversation_learner": 4.0,
        "feedback_learner": 4.0,
    }
    assert sum(gpus.values()) + 8 == 32  # 24 Ray GPUs + the judge node's 8 = 4 nodes x 8


def test_vm_cluster_files_pass_rays_own_validation() -> None:
    """What `ray up` runs first: fill in the provider's defaults, then validate against Ray's schema."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    for relative in ("aws.yaml", "gcp.yaml"):
        validate_config(prepare_config(_yaml(relative)))


@pytest.mark.parametrize("relative", CLUSTER_FILES)
def test_every_pool_fits_the_node_types_that_advertise_its_resources(relative: str) -> None:
    from waltz_ray.runtime.topology import check_resources, pool_specs

    types, specs = _node_types(relative), pool_specs(load_config(LLAMA8B))
    for spec in specs:
        hosts = [t for t in types.values() if spec.resources and all(k in t.custom for k in spec.resources)]
        assert [t.name for t in hosts] == [POOL_NODE_TYPES[spec.name][0]], f"{relative}: {spec.describe()}"
        node = hosts[0]
        assert spec.num_gpus <= node.gpus and spec.num_cpus <= node.cpus, f"{relative}: {spec.describe()} on {node}"
    for node in types.values():  # every actor steered onto a type fits that type's nodes, summed over its pools
        here = [s for s in specs if s.resources and all(k in node.custom for k in s.resources)]
        for resource, per_node in {"CPU": node.cpus, "GPU": node.gpus, **node.custom}.items():
            asked = sum(s.num_actors * s.bundle.get(resource, 0.0) for s in here)
            assert asked <= node.count * per_node, f"{relative}: {node.name} {resource}: {asked} > {node.count} nodes"
    check_resources(specs, _totals(types))  # the runtime's own budget check passes at max_workers
    assert _totals(types)["GPU"] == 24.0  # 2 generation nodes x 8 + 1 learner node x 8; the judge node shows 0


@pytest.mark.parametrize("relative", CLUSTER_FILES)
def test_spot_for_generation_and_judge_on_demand_for_head_and_learners(relative: str) -> None:
    types = _node_types(relative)
    spot = {name: t.spot for name, t in types.items()}
    assert spot == {"head": False, "generation": True, "judge": True, "learner": False}
    for pool, (node_type, is_spot) in POOL_NODE_TYPES.items():
        assert spot[node_type] is is_spot, pool


def _judge_server_command(relative: str) -> list[str]:
    if relative.startswith("kuberay/"):
        cluster = next(d for d in yaml.safe_load_all((CLUSTER / relative).read_text()) if d["kind"] == "RayCluster")
        (judge,) = [g for g in cluster["spec"]["workerGroupSpecs"] if g["groupName"] == "judge"]
        (server,) = [c for c in judge["template"]["spec"]["containers"] if c["name"] == "judge-server"]
        gpus = server["resources"]["limits"]["nvidia.com/gpu"]
        assert f"--tensor-parallel-size={gpus}" in server["args"]  # the sidecar owns the pod's GPUs
        return [*server["command"], *server["args"]]
    commands = _yaml(relative)["available_node_types"]["judge"]["worker_setup_commands"]
    (line,) = [c for c in commands if "start_judge_server.sh" in c]
    return shlex.split(line)


@pytest.mark.parametrize("relative", CLUSTER_FILES)
def test_the_judge_node_serves_the_configured_judge_model_on_the_configured_port(relative: str) -> None:
    judge = load_config(LLAMA8B).judge
    url = urlsplit(judge.base_url or "")
    assert (url.hostname, url.port) == ("127.0.0.1", 8000)  # the server on the judge actor's own node
    argv = _judge_server_command(relative)
    if argv[:2] == ["vllm", "serve"]:  # KubeRay sidecar
        assert argv[2] == judge.model and "--host=127.0.0.1" in argv and f"--port={url.port}" in argv
        assert f"--served-model-name={judge.model}" in argv
    else:  # VM: start_judge_server.sh MODEL TENSOR_PARALLEL_SIZE PORT
        assert argv[0] == "bash" and argv[1].endswith("/cluster/start_judge_server.sh")
        assert argv[2:] == [judge.model, "8", str(url.port)]


def test_kuberay_rayjob_runs_the_readme_train_command_on_the_raycluster() -> None:
    from waltz_ray.cli import build_parser

    job = _yaml("kuberay/rayjob.yaml")
    docs = list(yaml.safe_load_all((CLUSTER / "kuberay" / "raycluster.yaml").read_text()))
    (cluster,) = [d for d in docs if d["kind"] == "RayCluster"]
    assert job["apiVersion"] == cluster["apiVersion"] == "ray.io/v1"
    assert (job["kind"], job["spec"]["clusterSelector"]) == ("RayJob", {"ray.io/cluster": cluster["metadata"]["name"]})
    assert job["spec"]["entrypoint"] == TRAIN_COMMAND
    assert TRAIN_COMMAND in (CLUSTER / "README.md").read_text()
    args = build_parser().parse_args(shlex.split(TRAIN_COMMAND)[1:])  # the real CLI accepts it
    assert (ROOT / args.config).is_file() and args.out.startswith("/mnt/runs/")
    working_dir = yaml.safe_load(job["spec"]["runtimeEnvYAML"])["working_dir"]
    assert f"WORKDIR {working_dir}" in (CLUSTER / "Dockerfile").read_text()  # the image holds the project there

    pods = [cluster["spec"]["headGroupSpec"]["template"]] + [g["template"] for g in cluster["spec"]["workerGroupSpecs"]]
    images = {c["image"] for pod in pods for c in pod["spec"]["containers"]}
    (submitter,) = job["spec"]["submitterPodTemplate"]["spec"]["containers"]
    assert images == {submitter["image"]}
    mounts = {m["mountPath"] for pod in pods for m in pod["spec"]["containers"][0].get("volumeMounts", [])}
    assert "/mnt/runs" in mounts  # the --out folder is the shared volume


def test_every_cluster_runs_the_pinned_ray_and_the_same_image() -> None:
    pinned = re.search(r'"ray\[[^]]*\]==([0-9.]+)"', (ROOT / "pyproject.toml").read_text()).group(1)  # type: ignore[union-attr]
    base = re.search(r"^FROM (\S+)$", (CLUSTER / "Dockerfile").read_text(), re.M).group(1)  # type: ignore[union-attr]
    assert base == f"rayproject/ray:{pinned}-py311-gpu"
    for relative in ("aws.yaml", "gcp.yaml"):
        assert _yaml(relative)["docker"]["image"] == base
    cluster = next(
        d
        for d in yaml.safe_load_all((CLUSTER / "kuberay" / "raycluster.yaml").read_text())
        if d["kind"] == "RayCluster"
    )
    assert cluster["spec"]["rayVersion"] == pinned


def test_readme_memory_table_is_what_memory_estimate_prints() -> None:
    namespace = runpy.run_path(str(CLUSTER / "memory_estimate.py"))  # pure arithmetic; __main__ does not run
    readme = (CLUSTER / "README.md").read_text()
    shown = readme.split("<!-- memory-table -->\n", 1)[1].split("\n<!-- /memory-table -->", 1)[0]
    assert shown == namespace["table"]()
    config = load_config(LLAMA8B)
    for agent in (config.agents.conversation, config.agents.feedback):  # the estimate uses the config's numbers
        assert agent.gpu_memory_utilization == namespace["VLLM_UTILIZATION"]
        assert agent.max_model_len == namespace["SEQ"]
    # hand check: 32.1 + 4.0 + 1.0 + 2.0 + 26.3 + 11.6 = 77.0 (cluster/README.md, "Measured on one H100")
    assert "| learner | total at the forward/backward peak | ~77 GB of 85 |" in shown
