"""Peer benchmark: this project's GRPO training vs TRL's ``GRPOTrainer`` on the same single-agent RL workload.

ONE invocation, ONE process (plus this project's Ray actors): the same workload is trained three times, by this
project on its Ray runtime (``runtime.mode: ray``, synchronous as in ``configs/tiny.yaml``), by TRL's
``GRPOTrainer`` and by this project's inline runtime (everything in one process, like TRL). The three runs take
turns step by step (``Turns``: run A's step 1, B's step 1, C's step 1, A's step 2, ...; exactly one computes at any
moment), so drifting load on a shared machine hits all three alike. The workload is the single-model RL baseline
(``algorithm.mode: single``, ``stages.stage1_steps: 0``): only the conversation agent, rewarded with R_c
(``core.rewards.conversation_reward``) of the rule judge's verdict (``engines.judges.RuleJudge``).

Held equal, and how:
- model: the same checkpoint directory (the config's tiny Llama instruct agent with its tokenizer and chat template),
  fp32, loaded by both from that path; the frozen reference model is a second copy of it on both sides.
- prompts: the same ``steps x prompts_per_step`` training prompts in the same order (this project's seeded prompt
  stream; TRL gets them as a dataset with ``shuffle_dataset=False``), each as the conversation agent's chat
  (``core.protocol.conversation_messages`` with the config's system prompt). Before anything is timed the script
  checks that TRL's prompt token ids (``apply_chat_template(tokenize=True)``) equal this project's
  (``render_chat`` + ``tokenizer(add_special_tokens=False)``) for every prompt.
- reward: TRL's reward function calls ``RuleJudge.judge`` and ``conversation_reward``, the code this project's judge
  pool runs (the inline run gets the very judge object TRL uses).
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
  top_p 1.0, no top_k. Both score the policy once per step (TRL: no ``old_per_token_logps`` pass when generation
  and optimizer steps align; this project: ``AgentUpdate.on_policy``) and the
  reference once. TRL: ``lr_scheduler_type="constant"``, ``bf16=False`` and ``gradient_checkpointing=False`` (TRL's
  defaults are bf16 and checkpointing; this project uses neither).
- threads: ``--threads`` torch intra-op threads (default 1) in the process (TRL, inline) and in every actor of the
  Ray runtime (``runtime.num_threads``; the synchronous runtime runs one stage at a time). One, because on a loaded
  2-core machine two OpenMP threads stall at every barrier: an 8-token generate took 1.3 s with 2 threads and 0.008 s
  with 1 in the same process. The Ray actors run at the driver's priority (``ray_session`` sets
  ``RAY_worker_niceness=0``; Ray's default lowers them by 15 nice levels).
Differences left: TRL divides by a group's sample std (N - 1) plus 1e-4, this project by the population std plus
1e-8; the random streams differ, so the sampled completions and the rewards differ.

What is timed: each run's training-step loop only. A run's step time is the time it held the turn from the start of
that step to the start of its next one (its own between-step work included: metrics rows, TRL's logging and batch
fetch), or to the end of its last step; the loop time is their sum. This project's step starts at ``train_step`` (the
Ray run's rollout is part of its step: with ``max_staleness: 0`` nothing runs ahead), TRL's at ``on_step_begin``
(until ``on_step_end``). Not timed (``setup_s``): building the tiny model, starting Ray, building the actor pools
(this project) or the trainer with its model, reference model and dataloader (TRL). This project's initial and
final evaluations are skipped, and its final checkpoint is not written.

Output (stdout): the load average, a table (loop time, s/step, episodes/s, generated tokens/s, optimizer steps,
mean reward of the first and last few steps, generation seconds, set-up seconds),
``ours_over_trl_paired_median`` (the median over steps of TRL's step time / this project's Ray step time) and, as
the LAST line, ``ours_over_trl=<episodes/s of this project's Ray runtime / episodes/s of TRL>``.
``<out>/peer_trl.json`` holds the same numbers, every step time and the per-step rewards.

    python benchmarks/peer_trl.py                         # configs/tiny.yaml's agent: 40 steps x 8 prompts x 8
    python benchmarks/peer_trl.py --steps 10 --prompts-per-step 4 --num-generations 4 --out runs/peer_trl
    python benchmarks/peer_trl.py --reduced               # seconds-scale smoke run (test suite)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
REDUCED = ["tiny.sft_steps=3", "tiny.hidden_size=64", "tiny.num_layers=1", "runtime.remote_timeout_s=180"]
REDUCED_SIZES = {"steps": 2, "prompts_per_step": 2, "num_generations": 4, "max_new_tokens": 8, "micro_batch": 4}
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
    "runtime.max_staleness=0",
    "logging.wandb_mode=disabled",
    "logging.progress=false",
    "logging.sample_table_every=0",
    "checkpoint.every=0",
]
ROWS = {"ours_ray": "this project, Ray runtime", "trl": "TRL GRPOTrainer", "ours_inline": "this project, inline"}


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
    parser.add_argument("--no-inline", action="store_true", help="skip the third row (this project, inline)")
    parser.add_argument("--out", default=None, help="work dir (peer_trl.json, runs; cache with --reduced)")
    parser.add_argument(
        "--reduced",
        action="store_true",
        help="tiny on-the-fly model (sft 3 steps, hidden 64, 1 layer) built in <out>/cache, 2 steps of 2 prompts x 4 "
        "samples x 8 tokens: a smoke run for the test suite",
    )
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


class Turns:
    """Round-robin turns between runs in threads, so that exactly one computes at a time: its start-up, then each
    training step, then its wind-down. Steps therefore interleave (A1 B1 C1 A2 B2 C2 ...) and a change in machine
    load hits every run alike. A run's step time is the time it held the turn from the start of that step to the
    start of its next one (its own between-step work: metrics, logging, fetching the next batch), or to the end of
    its last step; its loop time is their sum."""

    def __init__(self, names: Sequence[str]) -> None:
        self.order = list(names)
        self.current = 0
        self.cond = threading.Condition()
        self.holds: dict[str, list[list[float]]] = {name: [] for name in names}
        self.failure: BaseException | None = None

    def wait(self, name: str) -> None:
        with self.cond:
            self.cond.wait_for(lambda: self.failure is not None or self.order[self.current] == name)
            if self.failure is not None:
                raise RuntimeError(f"{name} stopped: another run failed") from self.failure

    def step_begin(self, name: str) -> None:
        """Hand the turn on and wait for it to come back; then this run's next step starts."""
        with self.cond:
            if self.holds[name]:
                self.holds[name][-1][1] = time.perf_counter()
            self.current = (self.current + 1) % len(self.order)
            self.cond.notify_all()
        self.wait(name)
        self.holds[name].append([time.perf_counter(), 0.0])

    def step_end(self, name: str) -> None:
        self.holds[name][-1][1] = time.perf_counter()  # moved on to the hand-over if another step follows

    def leave(self, name: str, failure: BaseException | None = None) -> None:
        with self.cond:
            self.order.remove(name)  # the leaver holds the turn, so the next run now sits at ``current``
            self.current = self.current % len(self.order) if self.order else 0
            if failure is not None and self.failure is None:
                self.failure = failure
            self.cond.notify_all()

    def steps(self, name: str) -> list[float]:
        return [end - start for start, end in self.holds[name]]

    def run_all(self, jobs: dict[str, Any]) -> None:
        """Run each job (a callable) in its own thread, taking turns; re-raise the first failure."""

        def work(name: str, job: Any) -> None:
            try:
                self.wait(name)
                job()
            except BaseException as exc:
                self.leave(name, exc)
                return
            self.leave(name)

        threads = [threading.Thread(target=work, args=item, name=item[0], daemon=True) for item in jobs.items()]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if self.failure is not None:
            raise self.failure


# ---------------------------------------------------------------------------------------------------- this project
def timed(trainer: Any, turns: Turns, name: str) -> Any:
    """``trainer`` taking ``turns`` at each training step, with the evaluations and the final checkpoint left out
    (TRL does neither here)."""

    def take_turns(_: Any, step: int, when: str) -> None:
        if when == "before":
            turns.step_begin(name)
        elif when == "after":
            turns.step_end(name)

    trainer.hooks.append(take_turns)
    trainer.evaluate = lambda filename: {}
    trainer.save_pretrained = lambda path: None
    return trainer


def build_ours(config: Any, out: Path, turns: Turns, name: str, judge: Any = None) -> tuple[Any, float]:
    """This project's trainer (Ray or inline by ``runtime.mode``) with its pools or models loaded, and how long
    that took."""
    if (out / "metrics.jsonl").exists():
        raise SystemExit(f"{out}/metrics.jsonl exists (metrics would be appended): pass an empty --out")
    began = time.perf_counter()
    if config.runtime.mode == "ray":
        from waltz_ray.runtime.driver import ray_trainer

        trainer = timed(ray_trainer(config, out), turns, name)
    else:
        from waltz_ray.trainer.inline import inline_trainer

        trainer = timed(inline_trainer(config, out, judge=judge), turns, name)
    return trainer, time.perf_counter() - began


def ours_result(out: Path, step_s: list[float]) -> dict[str, Any]:
    """A finished run of this project's trainer, from its metrics.jsonl and its timed steps."""
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "conversation/reward_mean" in r]
    if len(rows) != len(step_s) or not rows:
        raise RuntimeError(f"{out}: {len(step_s)} timed steps but {len(rows)} step rows in metrics.jsonl")
    stages: dict[str, float] = {}
    for row in rows:
        for key, value in row.items():
            if key.startswith("time/") and key != "time/step_wall":
                stages[key[5:]] = stages.get(key[5:], 0.0) + float(value)
    skipped = sum(int(r.get("conversation/skipped_steps", 0.0)) for r in rows)
    return {
        "steps_logged": len(rows),
        "optimizer_steps": int(rows[-1]["version/conversation"]) - skipped,
        "episodes": int(sum(r["samples/n_episodes"] for r in rows)),
        "tokens": int(sum(r["tokens/conversation_generated"] for r in rows)),
        "rewards": [float(r["conversation/reward_mean"]) for r in rows],
        "generation_s": stages.get("conversation_generation", 0.0),
        "stage_totals_s": stages,
    }


# ------------------------------------------------------------------------------------------------------------ TRL
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


class TRLRun:
    """TRL's ``GRPOTrainer`` built for the workload (``build``), then trained (``train``) taking ``turns`` at each
    optimizer step; its model's ``generate`` is timed."""

    def __init__(self, config: Any, w: dict[str, Any], model_path: str, prompts: list[Any], judge: Any) -> None:
        self.config, self.w, self.model_path, self.prompts = config, w, model_path, prompts
        self.reward = RewardLog(judge)
        self.generation_s = 0.0
        self.trainer: Any = None

    def build(self, out: Path, turns: Turns, name: str) -> float:
        import torch
        from datasets import Dataset
        from transformers import PrinterCallback, ProgressCallback, TrainerCallback
        from trl import GRPOConfig, GRPOTrainer

        from waltz_ray.engines.hf import load_tokenizer

        class TakeTurns(TrainerCallback):  # type: ignore[misc]
            def on_step_begin(self, *args: Any, **kwargs: Any) -> None:
                turns.step_begin(name)

            def on_step_end(self, *args: Any, **kwargs: Any) -> None:
                turns.step_end(name)

        began = time.perf_counter()
        w = self.w
        torch.set_num_threads(w["threads"])
        tokenizer = load_tokenizer(self.model_path)
        chats = [conversation_chat(self.config, p.text) for p in self.prompts]
        check_prompt_tokens(tokenizer, chats)
        rows = [{"prompt": chat, "text": p.text, "label": p.label} for chat, p in zip(chats, self.prompts, strict=True)]
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
            generation_kwargs={"min_new_tokens": w["max_new_tokens"]},
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
        )
        self.trainer = GRPOTrainer(
            model=self.model_path,
            reward_funcs=[self.reward],
            args=args,
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
            callbacks=[TakeTurns()],
        )
        for quiet in (PrinterCallback, ProgressCallback):  # keep stdout for the results
            self.trainer.remove_callback(quiet)
        generate = self.trainer.model.generate

        def timed_generate(*a: Any, **kw: Any) -> Any:
            start = time.perf_counter()
            try:
                return generate(*a, **kw)
            finally:
                self.generation_s += time.perf_counter() - start

        self.trainer.model.generate = timed_generate
        return time.perf_counter() - began

    def train(self) -> None:
        self.trainer.train()

    def result(self) -> dict[str, Any]:
        calls = self.reward.calls
        return {
            "steps_logged": len(calls),
            "optimizer_steps": int(self.trainer.state.global_step),
            "episodes": int(sum(c["episodes"] for c in calls)),
            "tokens": int(sum(c["tokens"] for c in calls)),
            "rewards": [c["reward_mean"] for c in calls],
            "generation_s": self.generation_s,
        }


# ------------------------------------------------------------------------------------------------------- summary
def derive(run: dict[str, Any]) -> dict[str, Any]:
    """Rates and the reward trend of one run (``first``/``last``: the mean over the first and last k steps)."""
    wall, rewards = run["wall_s"], run["rewards"]
    k = max(1, min(5, len(rewards) // 3))
    return run | {
        "s_per_step": wall / max(1, run["optimizer_steps"]),
        "episodes_per_s": run["episodes"] / wall,
        "tokens_per_s": run["tokens"] / wall,
        "reward_first": sum(rewards[:k]) / k,
        "reward_last": sum(rewards[-k:]) / k,
        "reward_window": k,
    }


def check_fair(runs: dict[str, dict[str, Any]], w: dict[str, Any]) -> None:
    """Every row made ``steps`` optimizer steps on ``steps x batch`` completions of exactly ``max_new_tokens``."""
    episodes = w["steps"] * w["batch"]
    want = {"optimizer_steps": w["steps"], "episodes": episodes, "tokens": episodes * w["max_new_tokens"]}
    for name, run in runs.items():
        got = {key: run[key] for key in want}
        if got != want:
            raise SystemExit(f"unfair comparison: {name} ran {got}, the workload is {want}")


def table(runs: dict[str, dict[str, Any]], w: dict[str, Any]) -> str:
    lines = [
        f"peer benchmark: {w['steps']} steps x {w['prompts_per_step']} prompts x {w['num_generations']} samples x "
        f"{w['max_new_tokens']} tokens, micro batch {w['micro_batch']}, lr {w['lr']:g}, beta {w['beta']:g}, "
        f"clip {w['clip']:g}, {w['threads']} torch threads",
        f"{'run':<28}{'loop s':>9}{'s/step':>9}{'episodes/s':>12}{'tokens/s':>10}{'opt steps':>11}"
        f"{'reward first→last':>20}{'gen s':>8}{'setup s':>9}",
    ]
    for name, r in runs.items():
        trend = f"{r['reward_first']:.3f}→{r['reward_last']:.3f}"
        lines.append(
            f"{ROWS[name]:<28}{r['wall_s']:>9.2f}{r['s_per_step']:>9.3f}{r['episodes_per_s']:>12.2f}"
            f"{r['tokens_per_s']:>10.1f}{r['optimizer_steps']:>11d}{trend:>20}{r['generation_s']:>8.2f}{r['setup_s']:>9.2f}"
        )
    ours = runs["ours_ray"]["stage_totals_s"]
    steps = max(1, runs["ours_ray"]["optimizer_steps"])
    lines.append(
        "this project (Ray), mean s/step per stage: " + ", ".join(f"{k} {v / steps:.3f}" for k, v in ours.items())
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    warnings.filterwarnings("ignore", message="TRL currently supports vLLM")
    with tempfile.TemporaryDirectory(prefix="waltz-peer-trl-") as tmp:
        work = Path(args.out) if args.out else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        if args.reduced:  # set before Ray starts so the workers see it too
            os.environ["WALTZ_RAY_CACHE"] = str(work / "cache")
        from waltz_ray.config import load_config
        from waltz_ray.engines.judges import RuleJudge
        from waltz_ray.runtime.driver import ray_session
        from waltz_ray.worlds import resolve_model_path

        w, overrides = workload(args)
        configs = {mode: load_config(args.config, [*overrides, f"runtime.mode={mode}"]) for mode in ("ray", "inline")}
        model_path = resolve_model_path(configs["ray"].agents.conversation.model_path, configs["ray"])  # built once
        prompts = step_prompts(configs["ray"], w["steps"] * w["prompts_per_step"])
        judge = RuleJudge()
        machine: dict[str, Any] = {"cpu_count": os.cpu_count(), "load_average_start": load_average()}
        print(f"load_average={' '.join(map(str, machine['load_average_start']))} cpus={os.cpu_count()}", flush=True)
        names = [name for name in ROWS if not (args.no_inline and name == "ours_inline")]
        turns = Turns(names)
        with ray_session():
            trainers, setup = {}, {}
            trainers["ours_ray"], setup["ours_ray"] = build_ours(configs["ray"], work / "ours_ray", turns, "ours_ray")
            peer = TRLRun(configs["ray"], w, model_path, prompts, judge)
            setup["trl"] = peer.build(work / "trl", turns, "trl")
            if "ours_inline" in names:
                trainers["ours_inline"], setup["ours_inline"] = build_ours(
                    configs["inline"], work / "ours_inline", turns, "ours_inline", judge=judge
                )
            machine["load_average_before_loop"] = load_average()
            print(f"load_average_before_loop={' '.join(map(str, machine['load_average_before_loop']))}", flush=True)
            turns.run_all({name: peer.train if name == "trl" else trainers[name].run for name in names})
            machine["load_average_end"] = load_average()
        runs = {}
        for name in names:
            result = peer.result() if name == "trl" else ours_result(work / name, turns.steps(name))
            step_s = turns.steps(name)
            runs[name] = derive(result | {"setup_s": setup[name], "step_s": step_s, "wall_s": sum(step_s)})
        check_fair(runs, w)
        summary: dict[str, Any] = {"workload": w, "model_path": model_path, "machine": machine, "runs": runs}
        for name, key in (("ours_ray", "ours"), ("ours_inline", "ours_inline")):
            if name not in runs:
                continue
            summary[f"{key}_over_trl"] = runs[name]["episodes_per_s"] / runs["trl"]["episodes_per_s"]
            pairs = zip(runs["trl"]["step_s"], runs[name]["step_s"], strict=True)
            summary[f"{key}_over_trl_paired_median"] = statistics.median(theirs / ours for theirs, ours in pairs)
        ratio = summary["ours_over_trl"]
        import trl

        summary["trl_version"] = trl.__version__
        (work / "peer_trl.json").write_text(json.dumps(summary, indent=2, sort_keys=True))
        print(table(runs, w))
        print(f"load_average_end={' '.join(map(str, machine['load_average_end']))}")
        for key in ("ours_inline_over_trl_paired_median", "ours_inline_over_trl", "ours_over_trl_paired_median"):
            if key in summary:
                print(f"{key}={summary[key]:.3f}")
        print(f"ours_over_trl={ratio:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))  # run from a checkout without installing
    sys.exit(main())
