"""Setting up a DeepSpeed learner group: a free rendezvous port, joining torch.distributed through DeepSpeed (gloo on
CPU, nccl on GPU) and the DeepSpeed engine configs of the policy and the ZeRO-3 reference.

Nothing here imports ray; deepspeed is imported only inside the functions that need it.
"""

from __future__ import annotations

import os
import socket
from datetime import timedelta
from typing import Any

import torch

from waltz_ray.config import LearnerConfig


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _disable_shm_comm_jit() -> None:
    """Stop DeepSpeed's CPU accelerator from JIT-compiling the shm_comm op (about 60 s) at first init; gloo is used."""
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


def init_distributed(
    rank: int,
    world_size: int,
    master_addr: str = "127.0.0.1",
    master_port: int | None = None,
    *,
    timeout_s: float = 600.0,
    backend: str | None = None,
    local_rank: int | None = None,
) -> None:
    """Join (or create) this process's torch.distributed group through DeepSpeed, gloo on CPU.

    Sets RANK / LOCAL_RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT for this process, then calls
    ``deepspeed.init_distributed`` with a timeout (rendezvous and every collective). Calling it again in a process
    whose group already exists is a no-op when the world size matches: DeepSpeed must reuse its group (destroying
    it and re-initialising breaks later ``deepspeed.initialize`` calls). ``backend`` defaults to gloo without CUDA
    and nccl with it; ``local_rank`` defaults to ``rank`` modulo the visible GPUs (0 with one GPU per actor).
    """
    import deepspeed
    import torch.distributed as dist

    if dist.is_initialized():
        if dist.get_world_size() != world_size or dist.get_rank() != rank:
            raise RuntimeError(
                f"torch.distributed is already initialised as rank {dist.get_rank()}/{dist.get_world_size()}; "
                f"cannot join as rank {rank}/{world_size} in the same process"
            )
        return
    if master_port is None:
        if world_size != 1:
            raise ValueError("master_port is required when world_size > 1")
        master_port = free_port()
    if local_rank is None:
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        local_rank = rank % gpus if gpus else rank
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(local_rank),
        WORLD_SIZE=str(world_size),
        MASTER_ADDR=master_addr,
        MASTER_PORT=str(master_port),
    )
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if torch.cuda.is_available() else "cpu")
    if master_addr in ("127.0.0.1", "localhost"):
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    _disable_shm_comm_jit()
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    deepspeed.init_distributed(
        dist_backend=backend,
        auto_mpi_discovery=False,
        distributed_port=master_port,
        verbose=False,
        timeout=timedelta(seconds=timeout_s),
        rank=rank,
        world_size=world_size,
    )


def deepspeed_config(learner: LearnerConfig, bf16: bool = False) -> dict[str, Any]:
    """The DeepSpeed config for a policy engine: ZeRO stage, micro-batch, clipping, precision.

    ``gradient_accumulation_steps`` stays 1: ``DeepSpeedLearner`` marks the accumulation boundary itself and its
    losses are already normalised by the global token count, so DeepSpeed must not divide them again.
    """
    import torch.distributed as dist

    world = dist.get_world_size() if dist.is_initialized() else 1
    return {
        "train_micro_batch_size_per_gpu": learner.micro_batch_size,
        "train_batch_size": learner.micro_batch_size * world,
        "gradient_accumulation_steps": 1,
        "gradient_clipping": learner.grad_clip,
        "zero_optimization": {"stage": learner.zero_stage},
        "zero_allow_untested_optimizer": True,
        "bf16": {"enabled": bf16},
        "fp16": {"enabled": False},
        "steps_per_print": 2**31 - 1,
        "wall_clock_breakdown": False,
    }


def _reference_config(learner: LearnerConfig, bf16: bool) -> dict[str, Any]:
    """ZeRO-3 inference engine for the frozen reference model (no optimizer: parameters partitioned only)."""
    cfg = deepspeed_config(learner, bf16)
    cfg.pop("gradient_clipping")
    cfg.pop("zero_allow_untested_optimizer")
    return cfg
