"""Measure one learner rank of configs/llama8b.yaml on one GPU: DeepSpeed ZeRO-3 bf16 memory and step time.

The learner side of configs/llama8b.yaml is 4 ZeRO-3 ranks per agent training Llama-3.1-8B (hidden 4096, 32 layers,
intermediate 14336, 32 heads, 8 KV heads, vocab 128256). One 80 GB GPU cannot hold the whole model's states at world
size 1 (16 B/param x 8.03e9 = 128 GB), so this runs the SAME code path, ``waltz_ray.engines.deepspeed_learner.
DeepSpeedLearner`` (torch AdamW as a client optimizer, the reference model as a ZeRO-3 inference engine, the config
that ``waltz_ray.engines.distributed.deepspeed_config`` builds from configs/llama8b.yaml's ``learner`` section,
micro-batch 1, no activation checkpointing), on full-width models with fewer decoder layers (default 8 and 4 of the 32) at world size 1, random
weights. Each layer count runs in its own process (clean peak statistics). Then:

* the measured run is compared with ``memory_estimate.learner_items`` for the same model (ranks=1, its layers);
* a straight line through the layer counts projects one rank of the real run: model states and reference / 4
  ranks, activations for all 32 layers (ZeRO shards no activations), the optimizer step's transient as measured
  (its fp32 gradient copy is one ``sub_group_size`` = 1e9 elements in both cases). Not covered: the collectives of a
  4-rank group (all-gather of parameters, reduce-scatter of gradients, their buckets and time).

    python cluster/gpu_check.py --out gpu_check.json                 # on a GPU: 8:4096 and 4:4096, then copies
    python cluster/gpu_check.py --settings 8:4096,4:4096,8:2048      # LAYERS:SEQ pairs
    python cluster/gpu_check.py --toy                                # CPU smoke test of the same flow, tiny model
    python cluster/gpu_check.py --report cluster/gpu_check_h100.json # the analysis again on saved results, no GPU

How it was run (cluster/README.md, "Measured on one H100", 2026-11-27): on one H100 80GB HBM3 whose Python 3.12 had
torch 2.11 and transformers but neither DeepSpeed nor pydantic, so wheels went along (deepspeed 0.19.8 built with
``DS_BUILD_OPS=0 pip wheel --no-deps deepspeed==0.19.8``; hjson, pydantic, pydantic-core, annotated-types,
typing-inspection, typing-extensions downloaded for cp312 manylinux) and were installed to /tmp/site; from the
repository root:

    pip install -q --no-index --no-deps --target /tmp/site whl/*.whl
    PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore::FutureWarning NCCL_SOCKET_IFNAME=lo \
        DS_ACCELERATOR=cuda python3 cluster/gpu_check.py --settings 8:4096,4:4096,8:2048 --out gpu_check.json

That run used this script (the same measuring code) before ``--report`` existed and before memory_estimate.py's
constants were corrected, so cluster/gpu_check_h100.json's ``vs_estimate`` and ``projected_rank`` compare with the
old constants; ``--report`` recomputes them with the current ones.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LLAMA8B = ROOT / "configs" / "llama8b.yaml"
GB = 1e9
H100_BF16_DENSE_TFLOPS = 989.0  # H100 SXM datasheet, dense bf16: the denominator of the MFU figure

# Llama-3.1-8B's config.json (the shape; weights are random here).
LLAMA_8B_SHAPE: dict[str, Any] = {
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "max_position_embeddings": 131072,
    "rope_theta": 500000.0,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": False,
}
TOY_SHAPE: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 160,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 1000,
    "max_position_embeddings": 512,
    "tie_word_embeddings": False,
}
FULL_LAYERS = 32
RANKS = 4  # learner.num_workers in configs/llama8b.yaml


def memory_estimate() -> Any:
    """cluster/memory_estimate.py as a module (it sits next to this file; cluster/ is no package)."""
    spec = importlib.util.spec_from_file_location("memory_estimate", HERE / "memory_estimate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------------------------------------- one setting
class Probe:
    """GPU memory and wall-clock marks (synchronised); on CPU only the clock."""

    def __init__(self, cuda: bool) -> None:
        import torch

        self.torch = torch
        self.cuda = cuda

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def now(self) -> float:
        self.sync()
        return time.perf_counter()

    def mem(self) -> dict[str, float | None]:
        """Allocated / reserved now and their peaks since the last reset, in GB."""
        if not self.cuda:
            return dict.fromkeys(
                ("allocated_gb", "reserved_gb", "peak_allocated_gb", "peak_reserved_gb", "alloc_retries")
            )
        cuda = self.torch.cuda
        self.sync()
        return {
            "allocated_gb": cuda.memory_allocated() / GB,
            "reserved_gb": cuda.memory_reserved() / GB,
            "peak_allocated_gb": cuda.max_memory_allocated() / GB,
            "peak_reserved_gb": cuda.max_memory_reserved() / GB,
            "alloc_retries": cuda.memory_stats().get("num_alloc_retries", 0),
        }

    def reset_peak(self) -> None:
        if self.cuda:
            self.sync()
            self.torch.cuda.reset_peak_memory_stats()


def build_models(layers: int, toy: bool, device: str) -> tuple[Any, Any]:
    """(policy, reference): a Llama of the 8B shape with ``layers`` decoder layers, random weights, the reference a
    copy of the policy (as at step 0). bf16 on the GPU (DeepSpeed's bf16 mode would cast them anyway), fp32 on CPU."""
    import torch
    import transformers

    model_class: Any = transformers.LlamaForCausalLM  # untyped for mypy
    shape = TOY_SHAPE if toy else LLAMA_8B_SHAPE
    config = transformers.LlamaConfig(num_hidden_layers=layers, **shape)
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            policy = model_class(config)
    finally:
        torch.set_default_dtype(previous)
    policy.eval()
    return policy, copy.deepcopy(policy)


def make_inputs(rows: int, seq: int, vocab: int) -> tuple[Any, Any]:
    """rows sequences of seq tokens, no padding; the last 3/4 of each is the action (the policy-gradient tokens)."""
    import torch

    from waltz_ray.engines.learner import TokenBatch

    gen = torch.Generator().manual_seed(1)
    input_ids = torch.randint(0, vocab, (rows, seq), generator=gen)
    attention = torch.ones((rows, seq), dtype=torch.long)
    action = torch.zeros((rows, seq - 1), dtype=torch.float32)
    action[:, seq // 4 :] = 1.0
    advantages = torch.randn((rows, seq - 1), generator=gen) * action
    return TokenBatch(input_ids, attention, action), advantages


def device_info(cuda: bool) -> dict[str, Any]:
    import torch
    import transformers

    import waltz_ray.engines.deepspeed_learner as ds_learner
    import waltz_ray.engines.distributed as ds_setup
    import waltz_ray.engines.learner as learner

    info: dict[str, Any] = {"torch": torch.__version__, "transformers": transformers.__version__}
    for module in (ds_learner, ds_setup, learner):  # which learner code was measured
        source = Path(str(module.__file__))
        info[f"{source.name}_sha256"] = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
        info[f"{source.name}_path"] = str(source)
    with contextlib.suppress(Exception):
        import deepspeed

        info["deepspeed"] = deepspeed.__version__
    if not cuda:
        info["device"] = "cpu"
        return info
    props = torch.cuda.get_device_properties(0)
    info.update(
        device=torch.cuda.get_device_name(0),
        total_memory_gb=props.total_memory / GB,
        multiprocessors=props.multi_processor_count,
        cuda_runtime=torch.version.cuda,
    )
    with contextlib.suppress(Exception):
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        info["nvidia_smi"] = out.stdout.strip()
    return info


def run_setting(layers: int, seq: int, rows: int, updates: int, toy: bool, sync: bool) -> dict[str, Any]:
    """One model size in this process: build, DeepSpeedLearner, logprobs + update timed, memory at each phase."""
    import torch

    cuda = torch.cuda.is_available() and not toy
    os.environ["DS_ACCELERATOR"] = "cuda" if cuda else "cpu"
    from waltz_ray.config import load_config
    from waltz_ray.engines.deepspeed_learner import DeepSpeedLearner
    from waltz_ray.engines.distributed import deepspeed_config

    probe = Probe(cuda)
    config = load_config(LLAMA8B, ["learner.num_workers=1"])  # world size 1; everything else as the paper config
    learner_cfg, algorithm_cfg = config.learner, config.algorithm
    dtype = config.agents.conversation.dtype if cuda else "float32"
    out: dict[str, Any] = {"layers": layers, "seq": seq, "rows": rows, "toy": toy, "info": device_info(cuda)}
    print(f"[gpu_check] layers={layers} seq={seq} rows={rows} {out['info']}", flush=True)

    t0 = probe.now()
    policy, reference = build_models(layers, toy, "cuda" if cuda else "cpu")
    out["params"] = sum(p.numel() for p in policy.parameters())
    out["embedding_params"] = (
        policy.get_input_embeddings().weight.numel() + policy.get_output_embeddings().weight.numel()
    )
    out["attn_implementation"] = policy.config._attn_implementation
    out["build_s"] = probe.now() - t0
    out["mem_built"] = probe.mem()
    print(
        f"[gpu_check] built {out['params'] / 1e9:.3f}B params in {out['build_s']:.1f} s {out['mem_built']}", flush=True
    )

    probe.reset_peak()
    t0 = probe.now()
    learner = DeepSpeedLearner(policy, reference, learner_cfg, algorithm_cfg, dtype=dtype)
    del policy, reference
    out["init_s"] = probe.now() - t0
    out["ds_config"] = deepspeed_config(learner_cfg, learner.bf16)
    out["bf16"] = learner.bf16
    out["optimizer"] = type(learner.engine.optimizer).__name__
    out["client_optimizer"] = type(getattr(learner.engine.optimizer, "optimizer", learner.optimizer)).__name__
    if cuda:
        torch.cuda.empty_cache()
    out["mem_init"] = probe.mem()
    print(f"[gpu_check] DeepSpeedLearner ready in {out['init_s']:.1f} s {out['mem_init']}", flush=True)

    # Phase marks inside update(): the engine's step is wrapped (peak of forward+backward, then of the step).
    marks: dict[str, Any] = {}
    engine_step = learner.engine.step

    def timed_step(*args: Any, **kwargs: Any) -> Any:
        marks["fb_mem"] = probe.mem()
        probe.reset_peak()
        start = probe.now()
        result = engine_step(*args, **kwargs)
        marks["step_s"] = probe.now() - start
        marks["step_mem"] = probe.mem()
        return result

    learner.engine.step = timed_step

    batch, advantages = make_inputs(rows, seq, learner.engine.module.config.vocab_size)
    tokens = rows * seq
    logprob_runs, update_runs = [], []
    for index in range(updates):
        probe.reset_peak()
        start = probe.now()
        old, ref = learner.logprobs(batch)
        logprob_s = probe.now() - start
        logprob_runs.append({"s": logprob_s, "mem": probe.mem()})
        assert ref is not None
        probe.reset_peak()
        before = probe.mem()
        start = probe.now()
        stats = learner.update(batch, old, ref, advantages)
        update_s = probe.now() - start
        run = {
            "s": update_s,
            "step_s": marks["step_s"],
            "fb_s": update_s - marks["step_s"],
            "mem_before": before,
            "fb_mem": marks["fb_mem"],
            "step_mem": marks["step_mem"],
            "mem_after": probe.mem(),
            "loss": stats.loss,
            "grad_norm": stats.grad_norm,
            "skipped": stats.skipped,
        }
        update_runs.append(run)
        print(
            f"[gpu_check] round {index}: logprobs {logprob_s:.3f} s, update {update_s:.3f} s "
            f"(forward+backward {run['fb_s']:.3f} s, step {run['step_s']:.3f} s), {tokens / update_s:,.0f} tokens/s; "
            f"fwd+bwd peak {run['fb_mem']['peak_allocated_gb']} GB, step peak {run['step_mem']['peak_allocated_gb']} "
            f"GB, after {run['mem_after']['allocated_gb']} GB; grad_norm {stats.grad_norm:.4g} skipped {stats.skipped}",
            flush=True,
        )
    out["logprobs"], out["updates"] = logprob_runs, update_runs

    if sync:
        start = probe.now()
        weights = learner.state_dict_for_sync()
        sync_s = probe.now() - start
        size = sum(t.numel() * t.element_size() for t in {id(t): t for t in weights.values()}.values())
        out["sync"] = {"s": sync_s, "gb": size / GB, "gb_per_s": size / GB / sync_s}
        print(f"[gpu_check] state_dict_for_sync: {size / GB:.2f} GB to CPU in {sync_s:.2f} s", flush=True)
    return out


# ------------------------------------------------------------------------------------------------- analysis
def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def summarise(run: dict[str, Any]) -> dict[str, Any]:
    """Steady-state figures of one setting: rounds after the first (warm-up), medians."""
    timed = run["updates"][1:] or run["updates"]
    timed_lp = run["logprobs"][1:] or run["logprobs"]
    rows, seq = run["rows"], run["seq"]
    update_s = _median([u["s"] for u in timed])
    fb_s = _median([u["fb_s"] for u in timed])
    out: dict[str, Any] = {
        "layers": run["layers"],
        "seq": seq,
        "params": run["params"],
        "update_s": update_s,
        "fb_s_per_sequence": fb_s / rows,
        "step_s": _median([u["step_s"] for u in timed]),
        "logprobs_s_per_sequence": _median([u["s"] for u in timed_lp]) / rows,
        "tokens_per_s": rows * seq / update_s,
        "fb_tokens_per_s": rows * seq / fb_s,
    }
    matmul_params = run["params"] - run["embedding_params"] / 2  # the input embedding is a lookup, lm_head a matmul
    out["fb_mfu"] = 6 * matmul_params * out["fb_tokens_per_s"] / (H100_BF16_DENSE_TFLOPS * 1e12)
    if run["mem_init"]["allocated_gb"] is None:
        return out
    last = run["updates"][-1]
    steady = last["mem_after"]["allocated_gb"]
    out.update(
        mem_init_gb=run["mem_init"]["allocated_gb"],
        steady_gb=steady,
        fb_peak_gb=max(u["fb_mem"]["peak_allocated_gb"] for u in run["updates"]),
        step_peak_gb=max(u["step_mem"]["peak_allocated_gb"] for u in run["updates"]),
        logprobs_peak_gb=max(u["mem"]["peak_allocated_gb"] for u in run["logprobs"]),
        init_peak_gb=run["mem_init"]["peak_allocated_gb"],
    )
    # Peaks are reset before each phase (init, logprobs, forward+backward, step): the run's peak is the largest.
    phases = [u["mem"] for u in run["logprobs"]] + [m for u in run["updates"] for m in (u["fb_mem"], u["step_mem"])]
    out["peak_gb"] = max(out["fb_peak_gb"], out["step_peak_gb"], out["logprobs_peak_gb"])
    out["peak_reserved_gb"] = max(m["peak_reserved_gb"] for m in phases)
    out["alloc_retries"] = max(m["alloc_retries"] for m in phases)
    out["fb_transient_gb"] = out["fb_peak_gb"] - steady
    out["step_transient_gb"] = out["step_peak_gb"] - steady
    out["bytes_per_param_steady"] = steady * GB / run["params"]
    return out


def compare_with_estimate(summary: dict[str, Any], estimate: Any) -> dict[str, Any]:
    """memory_estimate.learner_items for the measured model itself (world size 1, its layer count). At world size 1
    DeepSpeed gathers nothing (a parameter is its own shard), so the gathered-parameters bound is left out here."""
    items = estimate.learner_items(params=summary["params"], layers=summary["layers"], ranks=1, seq=summary["seq"])
    items.pop("gathered_params")
    persistent = sum(items[k] for k in ("model_states", "reference", "gradient_bucket")) / GB
    transient = (items["activations"] + items["logits"]) / GB
    out: dict[str, Any] = {
        "estimate_items_gb": {k: v / GB for k, v in items.items()},
        "estimate_total_gb": persistent + transient,
        "estimate_persistent_gb": persistent,
        "estimate_transient_gb": transient,
    }
    if "peak_gb" in summary:
        out["measured_peak_gb"] = summary["peak_gb"]
        out["ratio_measured_over_estimated"] = summary["peak_gb"] / (persistent + transient)
        out["ratio_steady_over_estimated_persistent"] = summary["steady_gb"] / persistent
        out["ratio_fb_transient_over_estimated"] = summary["fb_transient_gb"] / transient
    return out


def _line(points: list[tuple[float, float]], at: float) -> tuple[float, float]:
    """(value at ``at``, slope) of the straight line through two or more points (least squares)."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    slope = sum((x - mx) * (y - my) for x, y in points) / sxx
    return my + slope * (at - mx), slope


def project_rank(summaries: list[dict[str, Any]], estimate: Any) -> dict[str, Any] | None:
    """One rank of configs/llama8b.yaml (32 layers, 4-way ZeRO-3) from the layer counts measured at one seq."""
    by_seq: dict[int, list[dict[str, Any]]] = {}
    for s in summaries:
        by_seq.setdefault(s["seq"], []).append(s)
    seq = max(by_seq, key=lambda k: (len({s["layers"] for s in by_seq[k]}), k))
    group = by_seq[seq]
    if len({s["layers"] for s in group}) < 2:
        return None

    def at_full(key: str) -> tuple[float, float]:
        return _line([(s["layers"], s[key]) for s in group], FULL_LAYERS)

    full_params, params_per_layer = at_full("params")
    out: dict[str, Any] = {"seq": seq, "from_layers": sorted(s["layers"] for s in group)}
    out["params_full"] = full_params
    out["params_per_layer"] = params_per_layer
    fb_full, fb_per_layer = at_full("fb_s_per_sequence")
    lp_full, _ = at_full("logprobs_s_per_sequence")
    widest = max(group, key=lambda s: s["layers"])
    step_full = widest["step_s"] * (full_params / RANKS) / widest["params"]  # AdamW over this rank's partition
    out.update(
        fb_s_per_sequence=fb_full,
        fb_s_per_layer_per_sequence=fb_per_layer,
        logprobs_s_per_sequence=lp_full,
        step_s=step_full,
        fb_tokens_per_s=seq / fb_full,
    )
    if "steady_gb" not in widest:
        return out
    steady_full, _ = at_full("steady_gb")
    fb_transient_full, fb_transient_per_layer = at_full("fb_transient_gb")
    step_transient = widest["step_transient_gb"]
    # ZeRO-3 shards parameters, gradients, optimizer states and the reference; its gradient bucket is per rank.
    bucket = 2 * estimate.REDUCE_BUCKET / GB
    steady_rank = (steady_full - bucket) / RANKS + bucket
    peak_rank = steady_rank + max(fb_transient_full, step_transient)
    items = estimate.learner_items(params=full_params, layers=FULL_LAYERS, ranks=RANKS, seq=seq)
    gathered = items["gathered_params"] / GB  # not measurable at world size 1: the estimate's bound is added
    estimated = sum(items.values()) / GB
    out.update(
        steady_gb=steady_rank,
        fb_transient_gb=fb_transient_full,
        fb_transient_per_layer_gb=fb_transient_per_layer,
        activation_bytes_per_token_hidden_layer=fb_transient_per_layer * GB / (seq * estimate.HIDDEN),
        step_transient_gb=step_transient,
        peak_gb=peak_rank,
        peak_with_gathered_bound_gb=peak_rank + gathered,
        estimate_total_gb=estimated,
        ratio_projected_over_estimated=(peak_rank + gathered) / estimated,
    )
    return out


def h2d_bandwidth(cuda: bool) -> dict[str, float] | None:
    """Host->device and device->host copies of a 1 GB bf16 tensor, pageable and pinned (best of 3, GB/s)."""
    if not cuda:
        return None
    import torch

    host = torch.ones(int(GB) // 2, dtype=torch.bfloat16)  # 1 GB
    pinned = host.pin_memory()
    dev = torch.empty_like(host, device="cuda")
    out: dict[str, float] = {}
    copies = (("h2d_pageable", dev, host), ("h2d_pinned", dev, pinned), ("d2h_pageable", host, dev))
    for name, dst, src in (*copies, ("d2h_pinned", pinned, dev)):
        times = []
        for _ in range(3):
            torch.cuda.synchronize()
            start = time.perf_counter()
            dst.copy_(src, non_blocking=True)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        out[name + "_gb_per_s"] = 1.0 / min(times)
    return out


def analyse(runs: list[dict[str, Any]], failures: list[dict[str, Any]]) -> dict[str, Any]:
    """Summaries, the comparison with memory_estimate.py and the projection to one rank of the real run."""
    report: dict[str, Any] = {"runs": runs, "failures": failures}
    try:
        estimate = memory_estimate()
        summaries = [summarise(run) for run in runs]
        report["summaries"] = summaries
        report["vs_estimate"] = [compare_with_estimate(s, estimate) for s in summaries]
        report["projected_rank"] = project_rank(summaries, estimate)
    except Exception:  # report what there is
        import traceback

        traceback.print_exc()
        failures.append({"analysis": traceback.format_exc(limit=3)})
    return report


# ------------------------------------------------------------------------------------------------- driver
def parse_settings(text: str) -> list[tuple[int, int]]:
    return [(int(layers), int(seq)) for layers, seq in (item.split(":") for item in text.split(",") if item)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--settings", default=None, help="LAYERS:SEQ pairs, comma-separated (default 8:4096,4:4096)")
    parser.add_argument("--rows", type=int, default=4, help="sequences per update = micro-batches (micro-batch 1)")
    parser.add_argument("--updates", type=int, default=4, help="logprobs+update rounds; the first is a warm-up")
    parser.add_argument("--toy", action="store_true", help="tiny model on CPU: checks the flow, measures nothing")
    parser.add_argument("--out", default=None, help="write the JSON here")
    parser.add_argument("--report", default=None, help="analyse a saved --out JSON again (no GPU needed)")
    parser.add_argument("--child-timeout", type=float, default=150.0)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)  # LAYERS:SEQ:JSON, one setting in-process
    parser.add_argument("--sync", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.report:  # the analysis again, on a saved run, against the current memory_estimate.py
        saved = json.loads(Path(args.report).read_text())
        report = {**analyse(saved["runs"], saved["failures"]), "copy_bandwidth": saved.get("copy_bandwidth")}
        print(json.dumps({k: report[k] for k in report if k != "runs"}, indent=1))
        if args.out:
            Path(args.out).write_text(json.dumps(report, indent=1))
        return 0

    if args.child:
        layers, seq, path = args.child.split(":", 2)
        result = run_setting(int(layers), int(seq), args.rows, args.updates, args.toy, args.sync)
        Path(path).write_text(json.dumps(result, indent=1))
        return 0

    settings = parse_settings(args.settings or ("2:64,1:64" if args.toy else "8:4096,4:4096"))
    paths = [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}  # the script's own folder still comes first
    runs, failures = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for index, (layers, seq) in enumerate(settings):
            path = Path(tmp) / f"run{index}.json"
            cmd = [sys.executable, str(Path(__file__).resolve()), "--child", f"{layers}:{seq}:{path}"]
            cmd += ["--rows", str(args.rows), "--updates", str(args.updates)]
            cmd += ["--toy"] if args.toy else []
            cmd += ["--sync"] if index == 0 else []  # time the weight gather to CPU once, on the largest model
            start = time.perf_counter()
            try:
                proc = subprocess.run(cmd, env=env, timeout=args.child_timeout, check=False)
                code: int | str = proc.returncode
            except subprocess.TimeoutExpired:
                code = "timeout"
            print(f"[gpu_check] setting {layers}:{seq} exit {code} in {time.perf_counter() - start:.0f} s", flush=True)
            if code == 0 and path.is_file():
                runs.append(json.loads(path.read_text()))
            else:
                failures.append({"layers": layers, "seq": seq, "exit": code})
                if code == "timeout":
                    break  # a hang (rendezvous, driver) would hang the next setting too
            if args.out:  # raw results first: a failure in the analysis below loses nothing
                Path(args.out).write_text(json.dumps({"runs": runs, "failures": failures}, indent=1))

    report = analyse(runs, failures)
    with contextlib.suppress(Exception):
        import torch

        report["copy_bandwidth"] = h2d_bandwidth(torch.cuda.is_available() and not args.toy)
    print(json.dumps({k: report[k] for k in report if k != "runs"}, indent=1), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))
    return 0 if runs and not failures else 1


if __name__ == "__main__":
    sys.exit(main())
