"""Wiring and lifecycle of the served pair: three Serve applications, started together and stopped in order.

``<name>-conversation`` and ``<name>-feedback`` each hold one agent deployment (no HTTP route); ``<name>`` is the
HTTP ingress, which reaches them through deployment handles. Separate applications let shutdown drain the ingress
first, while both agents still answer, so a request in flight can finish its revision turn.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ray import serve

from waltz_ray.config import ServeConfig, ServeDeploymentConfig, WaltzConfig
from waltz_ray.serve.agent import AgentServer, EngineSpec, GeneratorFactory
from waltz_ray.serve.auth import digest, read_keys
from waltz_ray.serve.ingress import IngressSpec, WaltzIngress, api
from waltz_ray.serve.validation import Limits
from waltz_ray.types import AGENTS, AgentName

log = logging.getLogger(__name__)
DRAIN_POLL_S = 0.5  # how often a stopping replica checks whether its in-flight requests are done


@dataclass(frozen=True)
class AppNames:
    """The three applications of one served pair."""

    ingress: str
    conversation: str
    feedback: str

    @classmethod
    def of(cls, name: str) -> AppNames:
        return cls(name, f"{name}-conversation", f"{name}-feedback")

    def agent(self, agent: AgentName) -> str:
        return self.conversation if agent == "conversation" else self.feedback


def deployment_options(deployment: ServeDeploymentConfig, config: ServeConfig) -> dict[str, Any]:
    """Serve options of one deployment: resources, concurrency and queue limits, health, shutdown, scaling."""
    options: dict[str, Any] = {
        "ray_actor_options": {"num_cpus": deployment.num_cpus, "num_gpus": deployment.num_gpus},
        "max_ongoing_requests": deployment.max_ongoing_requests,
        "max_queued_requests": deployment.max_queued_requests,
        "backpressure_config": {"status_code": 503, "retry_after_s": config.retry_after_s},
        "health_check_period_s": config.health_check_period_s,
        "health_check_timeout_s": config.health_check_timeout_s,
        "graceful_shutdown_timeout_s": config.graceful_shutdown_timeout_s,
        "graceful_shutdown_wait_loop_s": DRAIN_POLL_S,
    }
    scaling = deployment.autoscaling
    if scaling.enabled:
        options["autoscaling_config"] = {
            "min_replicas": scaling.min_replicas,
            "initial_replicas": max(1, scaling.min_replicas),
            "max_replicas": scaling.max_replicas,
            "target_ongoing_requests": scaling.target_ongoing_requests,
            "upscale_delay_s": scaling.upscale_delay_s,
            "downscale_delay_s": scaling.downscale_delay_s,
        }
    else:
        options["num_replicas"] = deployment.num_replicas
    return options


def ingress_spec(config: WaltzConfig, key_digests: tuple[bytes, ...], names: AppNames) -> IngressSpec:
    from waltz_ray.factory import rollout_settings

    return IngressSpec(
        limits=Limits.from_config(config),
        settings=rollout_settings(config, evaluation=True),  # the feedback agent reviews greedily, as in evaluation
        key_digests=key_digests,
        hide_feedback=config.serve.hide_feedback,
        request_timeout_s=config.serve.request_timeout_s,
        retry_after_s=config.serve.retry_after_s,
        conversation_app=names.conversation,
        feedback_app=names.feedback,
    )


def build_apps(
    config: WaltzConfig,
    model_paths: Mapping[AgentName, str],
    key_digests: tuple[bytes, ...],
    *,
    name: str = "waltz",
    generators: Mapping[AgentName, GeneratorFactory] | None = None,
) -> dict[str, Any]:
    """Application name -> bound application; ``generators`` replaces an agent's checkpoint (tests)."""
    s = config.serve
    names = AppNames.of(name)
    apps: dict[str, Any] = {}
    for agent in AGENTS:
        agent_config = getattr(config.agents, agent)
        deployment: ServeDeploymentConfig = getattr(s, agent)
        spec = EngineSpec(
            engine=agent_config.engine,
            model_path=model_paths[agent],
            dtype=agent_config.dtype,
            max_model_len=agent_config.max_model_len,
            gpu_memory_utilization=agent_config.gpu_memory_utilization,
            num_threads=s.num_threads,
        )
        factory = (generators or {}).get(agent)
        agent_deployment: Any = serve.deployment(AgentServer, name=agent, **deployment_options(deployment, s))
        app = agent_deployment.bind(
            agent,
            None if factory else spec,
            num_cpus=deployment.num_cpus,
            max_batch_size=deployment.max_batch_size,
            batch_wait_s=s.batch_wait_s,
            generator_factory=factory,
        )
        apps[names.agent(agent)] = app
    ingress: Any = serve.deployment(
        serve.ingress(api)(WaltzIngress), name="ingress", **deployment_options(s.ingress, s)
    )
    apps[names.ingress] = ingress.bind(ingress_spec(config, key_digests, names))
    return apps


def deploy(
    config: WaltzConfig,
    model_paths: Mapping[AgentName, str],
    key_digests: tuple[bytes, ...],
    *,
    name: str = "waltz",
    route_prefix: str = "/",
    generators: Mapping[AgentName, GeneratorFactory] | None = None,
) -> AppNames:
    """Start the three applications together and wait until all of them run (model loading included)."""
    names = AppNames.of(name)
    apps = build_apps(config, model_paths, key_digests, name=name, generators=generators)
    targets = [
        serve.RunTarget(app, name=app_name, route_prefix=route_prefix if app_name == names.ingress else None)
        for app_name, app in apps.items()
    ]
    serve.run_many(targets)
    return names


def undeploy(names: AppNames) -> None:
    """Graceful stop: the ingress first (its in-flight requests finish, new ones get no route), then the agents."""
    serve.delete(names.ingress)
    serve.delete(names.conversation)
    serve.delete(names.feedback)


def start_http(config: ServeConfig) -> int:
    """Start Serve's HTTP proxy on ``serve.host:serve.port`` (a free port when 0); returns the port."""
    from waltz_ray.engines.distributed import free_port

    port = config.port or free_port()
    # The proxy's own timeout is a backstop a little past the ingress's (a client header can lift the proxy's).
    http_options = {"host": config.host, "port": port, "request_timeout_s": config.request_timeout_s + 30.0}
    serve.start(http_options=http_options)
    return port


def run_server(config: WaltzConfig, model_paths: Mapping[AgentName, str], stop: threading.Event | None = None) -> int:
    """``waltz-ray serve``: serve until SIGINT/SIGTERM (or ``stop``), then drain and shut down; returns 0."""
    from waltz_ray.runtime.driver import ray_session

    key_digests = tuple(digest(k) for k in read_keys(config.serve))  # before Ray starts: a missing key fails fast
    os.environ.pop(config.serve.api_key_env, None)  # a local Ray's daemons and workers would inherit the keys
    if not key_digests:
        log.warning("serving WITHOUT authentication (serve.require_api_key=false)")
    stop = stop or threading.Event()
    with ray_session():
        for signum in (signal.SIGINT, signal.SIGTERM):  # after ray.init, which installs its own SIGTERM handler
            signal.signal(signum, lambda *_: stop.set())
        port = start_http(config.serve)
        names = deploy(config, model_paths, key_digests)
        print(f"waltz-ray: serving {config.serve.model_name!r} on http://{config.serve.host}:{port}/v1", flush=True)
        stop.wait()
        log.info("shutting down: draining in-flight requests")
        undeploy(names)
        serve.shutdown()  # type: ignore[no-untyped-call]
    return 0


def serve_command(
    config: WaltzConfig,
    conversation: str | None = None,
    feedback: str | None = None,
    *,
    host: str | None = None,
    port: int | None = None,
) -> int:
    """The CLI entry: apply ``--host``/``--port``, resolve the checkpoints (``tiny://`` builds), serve; 2 on a
    configuration error."""
    import sys

    from pydantic import ValidationError

    from waltz_ray.serve.auth import AuthConfigError
    from waltz_ray.worlds import resolve_model_path

    try:
        if host is not None:
            config.serve.host = host
        if port is not None:
            config.serve.port = port
        read_keys(config.serve)  # fail before loading anything
    except (ValidationError, AuthConfigError) as exc:
        print(f"waltz-ray serve: {exc}", file=sys.stderr)
        return 2
    given: dict[AgentName, str | None] = {"conversation": conversation, "feedback": feedback}
    paths = {a: resolve_model_path(given[a] or getattr(config.agents, a).model_path, config) for a in AGENTS}
    return run_server(config, paths)
