"""Worker-side half of vLLM weight sync, imported by vLLM by dotted name (``worker_extension_cls``).

vLLM mixes this class into each of its workers, so ``self`` is the worker and ``llm.collective_rpc(name, args=...)``
calls these methods on every rank. Only a file path crosses the RPC boundary (tensors as RPC arguments fail in
multiprocessing mode), and the weights go through the worker's ``reload_weights``, which re-runs the checkpoint
loaders and the CPU backend's weight repacking; ``model.load_weights`` alone fails on repacked layers
(see ../shared/ENVIRONMENT.md §4b item 4).

This module must stay importable without vLLM: it imports only safetensors/torch, lazily.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _iter_file(path: Path) -> Iterator[tuple[str, Any]]:
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt", device="cpu") as handle:
            for name in handle.keys():  # noqa: SIM118 - safe_open handles are not mappings
                yield name, handle.get_tensor(name)
    else:
        import torch

        yield from torch.load(str(path), map_location="cpu", weights_only=True).items()


def checkpoint_files(path: str | Path) -> list[Path]:
    """Weight files: the file itself, or a directory's ``*.safetensors`` (else ``pytorch_model*.bin``)."""
    root = Path(path)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise FileNotFoundError(f"weights path {str(root)!r} does not exist")
    files = sorted(root.glob("*.safetensors")) or sorted(root.glob("pytorch_model*.bin"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors or pytorch_model*.bin weight files in {str(root)!r}")
    return files


class WeightSyncExtension:
    """Methods added to every vLLM worker; each returns the number of tensors it loaded."""

    def load_weights_from_file(self, path: str) -> int:
        """Reload weights in place from one safetensors (or torch ``.bin``) file in checkpoint (HF) format."""
        return self.load_weights_from_path(path)

    def load_weights_from_path(self, path: str) -> int:
        """Reload weights in place from a weight file or a checkpoint directory (all its shards, streamed)."""
        count = 0

        def weights() -> Iterator[tuple[str, Any]]:
            nonlocal count
            for file in checkpoint_files(path):
                for name, tensor in _iter_file(file):
                    count += 1
                    yield name, tensor

        self.reload_weights(weights_iterator=weights(), is_checkpoint_format=True)  # type: ignore[attr-defined]
        refresh_tied_cpu_gemms(self.model_runner.get_model())  # type: ignore[attr-defined]
        return count


def refresh_tied_cpu_gemms(model: Any) -> int:
    """Rebuild the CPU GEMM of every layer whose weight is shared with another layer (a tied ``lm_head``).

    On CPU, vLLM prepares each linear layer's GEMM once its weights are loaded: ``layer.cpu_linear`` is bound to a
    oneDNN handle (or packed copy) made from the weight at that time. A tied ``lm_head`` receives no weights of its
    own (the checkpoint holds only ``embed_tokens``), so ``reload_weights`` never reprocesses it and the logits
    would keep using the old embedding matrix. Re-running its ``process_weights_after_loading`` rebinds it to the
    new one. On GPU the layers have no ``cpu_linear`` and nothing is done. Returns the number of layers rebuilt.
    """
    owners: dict[int, list[Any]] = {}
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if weight is not None and hasattr(weight, "data_ptr"):
            owners.setdefault(id(weight), []).append(module)
    rebuilt = 0
    for modules in owners.values():
        if len(modules) < 2:
            continue
        for module in modules:
            method = getattr(module, "quant_method", None)
            if hasattr(module, "cpu_linear") and method is not None and module.weight.numel() > 0:
                method.process_weights_after_loading(module)
                rebuilt += 1
    return rebuilt
