"""Weight sync from a learner group to its generation pool, behind one small interface with two implementations.

``ObjectStoreWeightSync`` (everywhere here): the state dict is in the object store once and every generator actor
loads it by reference. ``NCCLWeightSync`` (GPU clusters, untested here): learner rank 0 broadcasts it over NCCL.
Both take the same ``push(state, version)`` and bound every wait by a timeout.
"""

from __future__ import annotations

from typing import Any, Protocol

import ray

from waltz_ray.runtime.nccl import DEFAULT_BUCKET_BYTES
from waltz_ray.runtime.proxies import Pool, wait_all


class WeightSync(Protocol):
    """Make every actor of a generation pool serve ``version`` of the policy whose weights are ``state``."""

    def push(self, state: Any, version: int) -> None:
        """``state``: an object ref to a state dict (as returned by a learner actor) or a state dict."""
        ...


def _as_ref(state: Any) -> Any:
    return state if isinstance(state, ray.ObjectRef) else ray.put(state)


class ObjectStoreWeightSync:
    """``ray.put`` once (or reuse the learner's returned ref); each actor calls ``load_state_dict(ref, version)``."""

    def __init__(self, pool: Pool, timeout_s: float) -> None:
        self.pool = pool
        self.timeout_s = timeout_s

    def push(self, state: Any, version: int) -> None:
        ref = _as_ref(state)
        refs = [actor.load_state_dict.remote(ref, version) for actor in self.pool.actors]
        labels = [self.pool.label(i) for i in range(len(refs))]
        wait_all(refs, labels, self.timeout_s, f"weight sync to {self.pool.name!r} (version {version})")


class NCCLWeightSync:
    """Learner rank 0 broadcasts bucketed named tensors to every vLLM worker of the pool over a separate NCCL group.

    Untested here (no GPU): see ``waltz_ray.runtime.nccl`` for the pattern. ``start`` forms the group (the sender
    and every generator actor must have CUDA, else ``NCCLUnavailableError`` names which); ``push`` plans the buckets
    next to the weights, then runs the broadcast and the receives concurrently, then resets the prefix caches.
    The generator actors must have been built with ``nccl=True`` (the ``NCCLWorkerExtension``).
    """

    def __init__(
        self,
        pool: Pool,
        sender: Any,
        tensor_parallel_size: int,
        timeout_s: float,
        bucket_bytes: int = DEFAULT_BUCKET_BYTES,
    ) -> None:
        self.pool = pool
        self.sender = sender
        self.tensor_parallel_size = tensor_parallel_size
        self.timeout_s = timeout_s
        self.bucket_bytes = bucket_bytes
        self.started = False

    def _wait(self, refs: list[Any], labels: list[str], what: str) -> list[Any]:
        return wait_all(refs, labels, self.timeout_s, f"NCCL weight sync to {self.pool.name!r}: {what}")

    def start(self) -> None:
        address, port = self._wait([self.sender.master_address.remote()], ["learner rank 0"], "rendezvous")[0]
        world = 1 + len(self.pool.actors) * self.tensor_parallel_size
        refs = [self.sender.nccl.remote("init", address, port, world)]
        refs += [
            actor.nccl_init.remote(address, port, 1 + i * self.tensor_parallel_size, world)
            for i, actor in enumerate(self.pool.actors)
        ]
        labels = ["learner rank 0"] + [self.pool.label(i) for i in range(len(self.pool.actors))]
        self._wait(refs, labels, "group init")
        self.started = True

    def push(self, state: Any, version: int) -> None:
        if not self.started:
            self.start()
        ref = _as_ref(state)
        buckets = self._wait([self.sender.nccl.remote("plan", ref, self.bucket_bytes)], ["learner rank 0"], "plan")[0]
        refs = [self.sender.nccl.remote("broadcast", ref, buckets)]
        refs += [actor.nccl_receive.remote(buckets, version) for actor in self.pool.actors]
        labels = ["learner rank 0"] + [self.pool.label(i) for i in range(len(self.pool.actors))]
        self._wait(refs, labels, f"broadcast of version {version}")
