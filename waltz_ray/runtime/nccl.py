"""NCCL weight sync for GPU clusters: learner rank 0 broadcasts bucketed named tensors to every vLLM worker.

UNTESTED IN THIS REPOSITORY: the development machine has no GPU, so only the pure parts (bucket planning, the CUDA
guard) are tested. The pattern is vLLM's documented RLHF weight update (examples/offline_inference/rlhf.py and
rlhf_utils.py): learner rank 0 and every vLLM worker form a *separate* NCCL group (vLLM's ``StatelessProcessGroup`` +
``PyNcclCommunicator``, so neither DeepSpeed's default group nor vLLM's own groups are touched); rank 0 is the
sender, generator actor ``i`` with tensor-parallel size ``tp`` owns ranks ``1 + i*tp .. (i+1)*tp``. Tensors travel in
same-dtype buckets of ``bucket_bytes`` (one broadcast per bucket, not per tensor); the workers stream them into
``reload_weights`` (checkpoint names, so fused q/k/v and gate/up are handled by vLLM's loaders) and the prefix cache
is reset afterwards so no KV block computed with old weights is reused. Every step has a timeout on the driver.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from waltz_ray.engines.vllm_worker_ext import WeightSyncExtension

NCCL_EXTENSION = "waltz_ray.runtime.nccl.NCCLWorkerExtension"
DEFAULT_BUCKET_BYTES = 256 * 1024 * 1024


class NCCLUnavailableError(RuntimeError):
    """NCCL weight sync was asked for where there is no CUDA device."""


def require_cuda(where: str) -> None:
    """Refuse to start NCCL weight sync without CUDA, with an error that says what to use instead."""
    import torch

    if not torch.cuda.is_available():
        raise NCCLUnavailableError(
            f"NCCLWeightSync needs CUDA, but {where} has no CUDA device (torch.cuda.is_available() is False); "
            "on CPU use ObjectStoreWeightSync (pools with num_gpus: 0 select it)"
        )


@dataclass(frozen=True)
class TensorSlot:
    """Where one named tensor sits in its bucket's flat buffer."""

    name: str
    shape: tuple[int, ...]
    offset: int
    numel: int


@dataclass(frozen=True)
class Bucket:
    """Tensors of one dtype that travel as one flat buffer of ``numel`` elements."""

    dtype: str
    numel: int
    slots: tuple[TensorSlot, ...]


def plan_buckets(tensors: Iterable[tuple[str, tuple[int, ...], str, int]], bucket_bytes: int) -> list[Bucket]:
    """Group ``(name, shape, dtype, element_size)`` in order into same-dtype buckets of at most ``bucket_bytes``
    (a tensor larger than a bucket travels alone). Sender and receivers use the same plan."""
    buckets: list[Bucket] = []
    open_: dict[str, tuple[list[TensorSlot], int, int]] = {}  # dtype -> (slots, numel, element size)

    def close(dtype: str) -> None:
        slots, numel, _ = open_.pop(dtype)
        buckets.append(Bucket(dtype, numel, tuple(slots)))

    for name, shape, dtype, element_size in tensors:
        numel = math.prod(shape)
        if dtype in open_ and (open_[dtype][1] + numel) * element_size > bucket_bytes:
            close(dtype)
        slots, used, _ = open_.setdefault(dtype, ([], 0, element_size))
        slots.append(TensorSlot(name, tuple(shape), used, numel))
        open_[dtype] = (slots, used + numel, element_size)
    for dtype in list(open_):
        close(dtype)
    return buckets


def _communicator(address: str, port: int, rank: int, world_size: int, device: Any) -> Any:
    from vllm.distributed.device_communicators.pynccl import PyNcclCommunicator
    from vllm.distributed.utils import StatelessProcessGroup

    group = StatelessProcessGroup.create(host=address, port=port, rank=rank, world_size=world_size)
    return PyNcclCommunicator(group, device=device)


class NCCLSender:
    """The sending end, held by learner rank 0 (composition: the learner hosts forward three methods to it)."""

    def __init__(self) -> None:
        self.comm: Any = None

    def init(self, address: str, port: int, world_size: int) -> None:
        require_cuda("learner rank 0")
        import torch

        self.comm = _communicator(address, port, 0, world_size, torch.device("cuda", torch.cuda.current_device()))

    @staticmethod
    def plan(state: Mapping[str, Any], bucket_bytes: int) -> list[Bucket]:
        meta = ((n, tuple(t.shape), str(t.dtype).removeprefix("torch."), t.element_size()) for n, t in state.items())
        return plan_buckets(meta, bucket_bytes)

    def broadcast(self, state: Mapping[str, Any], buckets: list[Bucket]) -> int:
        """Copy each bucket's tensors into one CUDA buffer and broadcast it from rank 0; returns the tensor count."""
        import torch

        if self.comm is None:
            raise RuntimeError("NCCLSender.broadcast before init")
        stream = torch.cuda.current_stream()
        for bucket in buckets:
            buf = torch.empty(bucket.numel, dtype=getattr(torch, bucket.dtype), device=self.comm.device)
            for slot in bucket.slots:
                buf[slot.offset : slot.offset + slot.numel].copy_(state[slot.name].reshape(-1), non_blocking=True)
            self.comm.broadcast(buf, src=0, stream=stream)
            stream.synchronize()
        return sum(len(b.slots) for b in buckets)


class NCCLWorkerExtension(WeightSyncExtension):
    """Mixed into every vLLM worker (``worker_extension_cls``): the receiving end of the NCCL group."""

    def init_weight_group(self, address: str, port: int, rank_offset: int, world_size: int) -> int:
        require_cuda("a vLLM worker")
        from vllm.distributed.parallel_state import get_world_group

        rank = rank_offset + get_world_group().rank
        self._weight_group = _communicator(address, port, rank, world_size, self.device)  # type: ignore[attr-defined]
        return rank

    def receive_weight_buckets(self, buckets: list[Bucket]) -> int:
        """Receive every bucket (in the sender's order) and stream its tensors into vLLM's checkpoint loaders."""
        import torch

        group = self._weight_group
        count = 0

        def weights() -> Iterator[tuple[str, Any]]:
            nonlocal count
            stream = torch.cuda.current_stream()
            for bucket in buckets:
                buf = torch.empty(bucket.numel, dtype=getattr(torch, bucket.dtype), device=group.device)
                group.broadcast(buf, src=0, stream=stream)
                stream.synchronize()
                for slot in bucket.slots:
                    count += 1
                    yield slot.name, buf[slot.offset : slot.offset + slot.numel].view(slot.shape)

        self.reload_weights(weights_iterator=weights(), is_checkpoint_format=True)  # type: ignore[attr-defined]
        return count
