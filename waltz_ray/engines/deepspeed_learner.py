"""A policy learner on DeepSpeed ZeRO (stages 0-3), data-parallel over a torch.distributed group of learner ranks.

The same ``Learner`` surface as ``TorchLearner`` (``policy_version``, ``logprobs``, ``update``, ``save_pretrained``,
``save_state``, ``load_state``; the micro-batch loss is ``core.losses.micro_batch_loss`` for both) plus
``state_dict_for_sync`` and engine checkpoints. Every rank receives the WHOLE step batch and works on its rows
``rank::world_size``.

Data-parallel exactness. Each rank's micro-batch losses are token sums divided by the GLOBAL action-token count
(``micro_batch_loss(..., num_tokens=batch.num_tokens)``), so the per-rank gradients add up to the single-process
gradient.
DeepSpeed *averages* gradients over the data-parallel group (it divides the all-reduced / reduce-scattered sum by
``world_size``), so every backward loss is multiplied by ``world_size``: the averaged gradient is then exactly the
summed one. Gradient accumulation is driven by hand (``set_gradient_accumulation_boundary``) because the number of
micro-batches per update depends on the batch: the config keeps ``gradient_accumulation_steps = 1`` (so DeepSpeed never
rescales the loss) and one ``update`` is one optimizer step per PPO epoch. All ranks run the same number of micro
steps (ZeRO-2/3 communicate inside every backward, ZeRO-3 inside every forward); a rank whose shard is short runs a
zero-weighted dummy micro-batch (row 0 of the batch, loss · 0).

Reference model. Stages 0-2 keep it as a frozen plain module (a full copy per rank, as ZeRO-1/2 keep the policy).
Stage 3 wraps it in a ZeRO-3 *inference* engine (``deepspeed.initialize`` without an optimizer), so it is partitioned
like the policy; its forwards are then collective and padded the same way.

Only torch AdamW is used, as a client optimizer (no JIT-built DeepSpeed ops); fp32 on CPU, bf16 only when the
agent's dtype is bfloat16 and CUDA is available. Nothing here imports ray; ``LearnerWorker`` is the plain class the
runtime wraps with ``ray.remote``.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from waltz_ray.config import AlgorithmConfig, LearnerConfig
from waltz_ray.core.losses import micro_batch_loss
from waltz_ray.engines.distributed import (
    _disable_shm_comm_jit,
    _reference_config,
    deepspeed_config,
    free_port,
    init_distributed,
)
from waltz_ray.engines.learner import (
    LearnerHost,
    OffPolicy,
    TokenBatch,
    UpdateStats,
    check_update_arguments,
    importance_inputs,
    kl_settings,
    sequence_logprobs,
    with_off_policy,
)

log = logging.getLogger(__name__)

DEEPSPEED_DIR, DEEPSPEED_TAG = "deepspeed", "state"  # a DeepSpeed group's checkpoint inside an agent's folder


class DeepSpeedLearner:
    """One rank of a data-parallel DeepSpeed learner for one agent (construct it on every rank of the group).

    ``policy`` and ``reference`` are full (unpartitioned) HF causal LMs with the same weights; torch.distributed must
    already be initialised (``init_distributed``), else a world of one is created on a free loopback port.
    """

    def __init__(
        self,
        policy: Any,
        reference: Any,
        learner: LearnerConfig,
        algorithm: AlgorithmConfig,
        dtype: str = "float32",
    ) -> None:
        import deepspeed
        import torch.distributed as dist

        if not dist.is_initialized():
            init_distributed(0, 1)
        _disable_shm_comm_jit()
        self.learner = learner
        self.algorithm = algorithm
        self.policy_version = 0
        self.kl_in_loss, self.kl_estimator = kl_settings(algorithm)
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        self.zero_stage = learner.zero_stage
        self.bf16 = dtype == "bfloat16" and torch.cuda.is_available()
        policy = policy.float() if not self.bf16 else policy
        optimizer = torch.optim.AdamW(
            policy.parameters(), lr=learner.lr, betas=learner.betas, weight_decay=learner.weight_decay
        )
        self.engine, self.optimizer, _, _ = deepspeed.initialize(
            model=policy, optimizer=optimizer, config=deepspeed_config(learner, self.bf16)
        )
        self.device = self.engine.device
        self.engine.eval()
        reference = reference.eval().requires_grad_(False)
        if self.zero_stage == 3:
            self.reference: Any = deepspeed.initialize(model=reference, config=_reference_config(learner, self.bf16))[0]
            self.reference.eval()
        else:
            ref_dtype = torch.bfloat16 if self.bf16 else torch.float32
            self.reference = reference.to(device=self.device, dtype=ref_dtype)

    # ----------------------------------------------------------------------------------------------- sharding
    def _shard_rows(self, rows: int) -> list[int]:
        return list(range(self.rank, rows, self.world_size))

    def _micro_steps(self, rows: int) -> int:
        """Micro-batches every rank runs: enough for the largest shard (at least one, so collectives line up)."""
        largest = math.ceil(rows / self.world_size)
        return max(1, math.ceil(largest / self.learner.micro_batch_size))

    def _micro_batches(self, batch: TokenBatch) -> list[tuple[torch.Tensor | None, TokenBatch]]:
        """(row indices into the batch or None for a dummy, sub-batch on the engine's device) for this rank."""
        rows = batch.input_ids.shape[0]
        mine = self._shard_rows(rows)
        size = self.learner.micro_batch_size
        out: list[tuple[torch.Tensor | None, TokenBatch]] = []
        for step in range(self._micro_steps(rows)):
            chunk = mine[step * size : (step + 1) * size]
            # A rank whose shard ran out runs a zero-weighted pass on row 0 so ZeRO's collectives stay in step.
            rows_here = torch.tensor(chunk or [0], dtype=torch.long)
            out.append((rows_here if chunk else None, _to(_select(batch, rows_here), self.device)))
        return out

    # ----------------------------------------------------------------------------------------------- forward
    @torch.no_grad()
    def logprobs(
        self, batch: TokenBatch, with_reference: bool = True, with_policy: bool = True
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(old log-probs under the current policy, reference log-probs), both [B, L-1] on CPU, identical on every
        rank (either None when not asked for): each rank scores its shard into a zero-filled tensor, then one
        all-reduce sum assembles them."""
        self.engine.eval()
        rows, width = batch.input_ids.shape[0], batch.input_ids.shape[1] - 1
        old = torch.zeros((rows, width), dtype=torch.float32)
        ref = torch.zeros((rows, width), dtype=torch.float32)
        for index, part in self._micro_batches(batch):
            first = self.learner.logits_from_first_action
            policy_logp = (
                sequence_logprobs(self.engine, part, from_first_action=first)[0].float().cpu() if with_policy else None
            )
            ref_logp = (
                sequence_logprobs(self.reference, part, from_first_action=first)[0].float().cpu()
                if with_reference
                else None
            )
            if index is not None:
                if policy_logp is not None:
                    old[index] = policy_logp
                if ref_logp is not None:
                    ref[index] = ref_logp
        if self.world_size > 1:
            old = self._gather_rows(old) if with_policy else old
            ref = self._gather_rows(ref) if with_reference else ref
        return old if with_policy else None, ref if with_reference else None

    def _gather_rows(self, local: torch.Tensor) -> torch.Tensor:
        """Every rank filled only its rows (zeros elsewhere): an all-reduce sum assembles the whole tensor."""
        import torch.distributed as dist

        buf = local.to(self.device)
        dist.all_reduce(buf, op=dist.ReduceOp.SUM)
        return buf.cpu()

    # ----------------------------------------------------------------------------------------------- update
    def update(
        self,
        batch: TokenBatch,
        old_logp: torch.Tensor | None,
        ref_logp: torch.Tensor | None,
        advantages: torch.Tensor,
        off_policy: OffPolicy | None = None,
    ) -> UpdateStats:
        """PPO-clipped policy-gradient epochs over this rank's shard; one optimizer step per epoch.

        Every rank passes the whole batch (and whole old/ref/advantage tensors and ``off_policy``); the returned
        stats are global (summed over ranks) and identical on every rank. ``old_logp`` None: an on-policy
        single-epoch update, ``off_policy`` its stale tokens to reweight (see ``TorchLearner.update``).
        """
        check_update_arguments(old_logp, off_policy, self.algorithm.ppo_epochs)
        total = batch.num_tokens
        micro = self._micro_batches(batch)
        stats: list[UpdateStats] = []
        self.engine.train()
        for _ in range(self.algorithm.ppo_epochs):
            # loss, clip fraction, approx KL, entropy, KL to the reference (each a share of the batch's figure), then
            # the off-policy sums: stale tokens corrected, their importance weights, how many the cap truncated
            sums = torch.zeros(8, dtype=torch.float64)
            for step, (index, part) in enumerate(micro):
                self.engine.set_gradient_accumulation_boundary(step == len(micro) - 1)
                logp, entropy = sequence_logprobs(
                    self.engine, part, with_entropy=True, from_first_action=self.learner.logits_from_first_action
                )
                assert entropy is not None
                rows = index if index is not None else torch.tensor([0], dtype=torch.long)
                loss, stat = micro_batch_loss(
                    logp,
                    entropy,
                    None if old_logp is None else old_logp[rows].to(self.device),
                    None if ref_logp is None else ref_logp[rows].to(self.device),
                    advantages[rows].to(self.device),
                    part.action_mask,
                    clip_eps=self.algorithm.clip_eps,
                    kl_in_loss=self.kl_in_loss,
                    kl_estimator=self.kl_estimator,
                    kl_coef=self.algorithm.kl_coef,
                    num_tokens=total,
                    **importance_inputs(off_policy, rows, self.device),
                )
                weight = float(self.world_size) if index is not None else 0.0
                # DeepSpeed averages gradients over ranks; x world_size turns the average into the global sum.
                self.engine.backward(loss * weight)
                if index is None:
                    continue
                on_policy_kl = stat.ref_kl if old_logp is None else 0.0
                sums += torch.tensor(
                    [
                        stat.loss,
                        stat.clip_fraction,
                        stat.approx_kl,
                        stat.entropy,
                        on_policy_kl,
                        stat.offpolicy_tokens,
                        stat.offpolicy_weight_sum,
                        stat.offpolicy_truncated,
                    ],
                    dtype=torch.float64,
                )
            reduced = self._all_reduce(sums)
            stats.append(self._step(reduced[:4]))
        self.engine.eval()
        self.policy_version += 1
        if old_logp is not None:
            return stats[-1]
        corrected, weight_sum, truncated = (float(v) for v in reduced[5:8])
        on_policy = replace(stats[-1], ref_kl=float(reduced[4]))
        return with_off_policy(on_policy, off_policy, corrected, weight_sum, truncated, total)

    def _all_reduce(self, values: torch.Tensor) -> torch.Tensor:
        if self.world_size == 1:
            return values
        import torch.distributed as dist

        buf = values.to(self.device)
        dist.all_reduce(buf, op=dist.ReduceOp.SUM)
        return buf.cpu()

    def _step(self, sums: torch.Tensor) -> UpdateStats:
        loss, clip, approx, entropy = (float(v) for v in sums)
        lr = float(self.engine.get_lr()[0])
        if self.zero_stage == 0:
            # Plain DeepSpeed leaves the reduced (global) gradient on each parameter and does not report its norm.
            grads = [p.grad for p in self.engine.module.parameters() if p.grad is not None]
            grad_norm = float(torch.nn.utils.get_total_norm(grads)) if grads else 0.0
            if not (math.isfinite(loss) and math.isfinite(grad_norm)):
                self.engine.zero_grad()
                return UpdateStats(loss, clip, approx, entropy, grad_norm, lr, skipped=True)
            self.engine.step()
            return UpdateStats(loss, clip, approx, entropy, grad_norm, lr)
        # ZeRO optimizers compute the global norm in step() and skip (zeroing gradients) when it is not finite.
        self.engine.step()
        norm = self.engine.get_global_grad_norm()
        grad_norm = float(norm) if norm is not None else float("nan")
        skipped = not self.engine.was_step_applied() or not math.isfinite(loss)
        return UpdateStats(loss, clip, approx, entropy, grad_norm, lr, skipped=skipped)

    # ----------------------------------------------------------------------------------------------- weights
    def state_dict_for_sync(self) -> dict[str, torch.Tensor]:
        """Full (unpartitioned) policy weights as CPU tensors on rank 0, keyed like ``model.state_dict()`` (tied
        weights appear under every name, sharing one tensor); ``{}`` on other ranks.

        Collective under ZeRO-3: every rank must call it. Parameters are gathered one at a time with
        ``deepspeed.zero.GatheredParameters`` so at most one full parameter is materialised beyond the shards.
        """
        module = self.engine.module
        keys = set(module.state_dict().keys())
        out: dict[str, torch.Tensor] = {}
        if self.zero_stage == 3:
            import deepspeed

            seen: dict[int, torch.Tensor] = {}
            for name, param in module.named_parameters(remove_duplicate=False):
                if id(param) not in seen:
                    with deepspeed.zero.GatheredParameters([param], modifier_rank=None):
                        seen[id(param)] = param.data.detach().cpu().clone() if self.rank == 0 else torch.empty(0)
                if self.rank == 0 and name in keys:
                    out[name] = seen[id(param)]
            if self.rank == 0:
                for name, buf in module.named_buffers(remove_duplicate=False):
                    if name in keys:
                        out[name] = buf.detach().cpu().clone()
            return out
        if self.rank != 0:
            return {}
        copies: dict[int, torch.Tensor] = {}
        for name, tensor in module.state_dict(keep_vars=True).items():
            if id(tensor) not in copies:
                copies[id(tensor)] = tensor.detach().cpu().clone()
            out[name] = copies[id(tensor)]
        return out

    def save_checkpoint(self, directory: str | Path, tag: str) -> str:
        """DeepSpeed engine checkpoint (weights, optimizer and ZeRO partitions, policy version) under directory/tag.
        Collective: every rank calls it with the same arguments. The reference model is not saved (frozen)."""
        self.engine.save_checkpoint(str(directory), tag=tag, client_state={"policy_version": self.policy_version})
        return str(Path(directory) / tag)

    def load_checkpoint(self, directory: str | Path, tag: str) -> str:
        """Restore weights, optimizer state and policy version saved by ``save_checkpoint``. Collective."""
        path, client = self.engine.load_checkpoint(
            str(directory), tag=tag, load_optimizer_states=True, load_lr_scheduler_states=True
        )
        if path is None:
            raise FileNotFoundError(f"no DeepSpeed checkpoint {tag!r} under {directory}")
        self.policy_version = int((client or {}).get("policy_version", self.policy_version))
        return str(path)

    def save_pretrained(self, path: str | Path) -> None:
        """The policy in Hugging Face format; rank 0 writes the full weights. Collective (ZeRO-3 gathers)."""
        state = self.state_dict_for_sync()
        if self.rank == 0:
            self.engine.module.save_pretrained(str(path), state_dict=state)

    def save_state(self, path: str | Path) -> None:
        """Hugging Face weights plus the DeepSpeed checkpoint (optimizer, ZeRO partitions, version) under
        ``path/deepspeed``. Collective."""
        self.save_pretrained(path)
        self.save_checkpoint(Path(path) / DEEPSPEED_DIR, DEEPSPEED_TAG)

    def load_state(self, path: str | Path) -> None:
        """Restore what ``save_state`` wrote into ``path`` (weights, optimizer, policy version). Collective."""
        self.load_checkpoint(Path(path) / DEEPSPEED_DIR, DEEPSPEED_TAG)


def _select(batch: TokenBatch, index: torch.Tensor) -> TokenBatch:
    return TokenBatch(batch.input_ids[index], batch.attention_mask[index], batch.action_mask[index])


def _to(batch: TokenBatch, device: Any) -> TokenBatch:
    return TokenBatch(batch.input_ids.to(device), batch.attention_mask.to(device), batch.action_mask.to(device))


def _load_policy(model_path: str) -> Any:
    from transformers import AutoModelForCausalLM

    model: Any = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    model.eval()
    return model


class LearnerWorker(LearnerHost):
    """One learner rank as a plain object; the runtime wraps it with ``ray.remote(num_cpus=...)(LearnerWorker)``.

    Protocol: ask rank 0 for ``pick_master_port()``, then call ``setup`` on all ranks *concurrently* (it blocks
    until the whole group has joined), then call ``logprobs`` / ``update`` / ``state_dict_for_sync`` /
    ``save_pretrained`` / ``save_state`` / ``load_state`` / ``save_checkpoint`` / ``load_checkpoint`` on every rank
    with the same arguments (they are collective). The learner methods are ``LearnerHost``'s.
    """

    not_ready = "setup() has not been called"

    def __init__(self) -> None:
        self.learner: DeepSpeedLearner | None = None
        self.rank = 0

    @staticmethod
    def pick_master_port() -> int:
        return free_port()

    def setup(
        self,
        model_path: str,
        rank: int,
        world_size: int,
        master_addr: str,
        master_port: int,
        learner_cfg: LearnerConfig | dict[str, Any],
        algorithm_cfg: AlgorithmConfig | dict[str, Any],
        dtype: str = "float32",
        timeout_s: float = 600.0,
        reference_path: str | None = None,
    ) -> dict[str, Any]:
        """Join the group, load the policy from ``model_path`` and the reference from ``reference_path`` (default:
        the same) and build the engines; returns timings."""
        marks = [time.perf_counter()]
        learner_cfg = LearnerConfig.model_validate(learner_cfg)
        algorithm_cfg = AlgorithmConfig.model_validate(algorithm_cfg)
        import deepspeed  # noqa: F401  (timed apart: the import dominates a tiny model's setup)
        import transformers  # noqa: F401

        marks.append(time.perf_counter())
        init_distributed(rank, world_size, master_addr, master_port, timeout_s=timeout_s)
        marks.append(time.perf_counter())
        policy, reference = _load_policy(model_path), _load_policy(reference_path or model_path)
        marks.append(time.perf_counter())
        self.learner = DeepSpeedLearner(policy, reference, learner_cfg, algorithm_cfg, dtype=dtype)
        self.rank = rank
        marks.append(time.perf_counter())
        names = ("import_s", "init_distributed_s", "load_models_s", "init_engine_s")
        return {
            "rank": rank,
            "world_size": world_size,
            "zero_stage": learner_cfg.zero_stage,
            **{name: round(marks[i + 1] - marks[i], 3) for i, name in enumerate(names)},
        }

    def _ready(self) -> DeepSpeedLearner:
        learner: DeepSpeedLearner = super()._ready()
        return learner

    def save_checkpoint(self, directory: str, tag: str) -> str:
        return self._ready().save_checkpoint(directory, tag)

    def load_checkpoint(self, directory: str, tag: str) -> str:
        return self._ready().load_checkpoint(directory, tag)
