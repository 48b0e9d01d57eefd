"""Config -> objects: the agents, the judge and the rollout settings a run, an evaluation or a deployment needs.

The trainer, the Ray runtime, ``waltz-ray eval`` and ``waltz-ray serve`` all build from here, so one config means the
same models, prompts and decoding everywhere. Heavy libraries (transformers, torch) load only when something is
built.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from waltz_ray.core import protocol
from waltz_ray.data.length import (
    BOUNDARY_SLACK_TOKENS,
    conversation_prompt_budget,
    feedback_prompt_budget,
    filter_by_length,
)
from waltz_ray.engines.base import Generator, Judge, Learner
from waltz_ray.rollout import RolloutSettings, greedy
from waltz_ray.types import AGENTS, AgentName, GenerationParams, Prompt

if TYPE_CHECKING:
    from waltz_ray.checkpoint import ResumePoint
    from waltz_ray.config import WaltzConfig


@dataclass
class Agent:
    """One agent's moving parts. In-process the generator and the learner share the policy model (no weight copy);
    on Ray both are proxies of actor pools (``waltz_ray.runtime.proxies``) with the same interfaces."""

    name: AgentName
    generator: Generator
    learner: Learner
    tokenizer: Any  # a Hugging Face tokenizer (pad id for batching, chat template for rendering)


def reference_paths(config: WaltzConfig, resume: ResumePoint | None = None) -> dict[AgentName, str]:
    """Each agent's reference model (its starting weights): the configured model, or the one a checkpoint names."""
    from waltz_ray.worlds import resolve_model_path

    if resume is not None:
        return {name: resume.state.reference_paths[name] for name in AGENTS}
    return {name: resolve_model_path(getattr(config.agents, name).model_path, config) for name in AGENTS}


def build_agent(name: AgentName, config: WaltzConfig, resume: ResumePoint | None = None) -> Agent:
    """Policy, frozen reference and optimizer in-process; ``resume`` restores a checkpoint's weights and state."""
    from waltz_ray.engines.hf import HFGenerator, load_model_and_tokenizer
    from waltz_ray.engines.learner import TorchLearner

    agent_cfg = getattr(config.agents, name)
    reference_path = reference_paths(config, resume)[name]
    policy_path = resume.agent_path(name) if resume is not None else reference_path
    policy, tokenizer = load_model_and_tokenizer(policy_path, agent_cfg.dtype)
    reference, _ = load_model_and_tokenizer(reference_path, agent_cfg.dtype)
    learner = TorchLearner(policy, reference, config.learner, config.algorithm)
    if resume is not None:
        learner.load_state(policy_path)
    generator = HFGenerator(policy, tokenizer)
    generator.policy_version = learner.policy_version
    return Agent(name, generator, learner, tokenizer)


def rollout_settings(config: WaltzConfig, evaluation: bool = False) -> RolloutSettings:
    """Protocol settings from the config; evaluation uses greedy decoding."""
    conv, fb = config.agents.conversation, config.agents.feedback
    conv_params = GenerationParams(
        conv.generation.max_new_tokens,
        config.rollout.conversation_temperature,
        conv.generation.top_p,
        min_new_tokens=conv.generation.min_new_tokens,
    )
    fb_params = GenerationParams(
        fb.generation.max_new_tokens,
        config.rollout.feedback_temperature,
        fb.generation.top_p,
        min_new_tokens=fb.generation.min_new_tokens,
    )
    if evaluation:
        conv_params, fb_params = greedy(conv_params), greedy(fb_params)
    return RolloutSettings(
        conversation_system=protocol.CONVERSATION_SYSTEM_PROMPT if conv.system_prompt is None else conv.system_prompt,
        feedback_system=protocol.FEEDBACK_SYSTEM_PROMPT if fb.system_prompt is None else fb.system_prompt,
        conversation_params=conv_params,
        feedback_params=fb_params,
        # algorithm.mode single (the single-model RL baseline): no feedback round, so episodes are c0 alone and
        # every sample is a type-A conversation sample; the only place a run checks the mode.
        t_max=0 if config.algorithm.mode == "single" else config.rollout.t_max,
        revision_template=config.rollout.revision_template or protocol.DEFAULT_REVISION_TEMPLATE,
    )


def build_judge(config: WaltzConfig) -> Judge:
    """The configured judge: the rule judge, an OpenAI-compatible HTTP endpoint, or an LLM judge in-process."""
    from waltz_ray.engines import judges

    j = config.judge
    if j.kind == "rule":
        return judges.RuleJudge()
    if j.kind == "http":
        return judges.HTTPJudge(
            j.base_url or "",
            j.model or "",
            api_key_env=j.api_key_env,
            api_key_file=j.api_key_file,
            timeout_s=j.timeout_s,
            max_retries=j.max_retries,
            concurrency=j.concurrency,
        )
    from waltz_ray.engines.hf import HFGenerator
    from waltz_ray.worlds import resolve_model_path

    return judges.LLMJudge(HFGenerator.from_pretrained(resolve_model_path(j.model_path or "", config)))


# --- prompts that fit: every turn of an episode must fit its agent's context ---------------------------------------


def prompt_budgets(config: WaltzConfig, tokenizers: Mapping[AgentName, Any]) -> dict[AgentName, int]:
    """Each agent's most prompt tokens (counted with its own tokenizer) for which every turn of an episode fits
    ``agents.<agent>.max_model_len``: the templates' and system prompts' tokens are measured by rendering the
    longest state with empty texts, plus ``BOUNDARY_SLACK_TOKENS`` per text. Raises ValueError naming the config
    fields when no prompt can fit."""
    settings = rollout_settings(config)
    revisions = settings.t_max
    response_tokens = config.agents.conversation.generation.max_new_tokens
    feedback_tokens = config.agents.feedback.generation.max_new_tokens
    budgets: dict[AgentName, int] = {}
    for agent in AGENTS:
        tokenizer = tokenizers[agent]
        if agent == "conversation":
            chat = protocol.conversation_messages(
                settings.conversation_system, "", [("", "")] * revisions, settings.revision_template
            )
            texts = 1 + 2 * revisions  # the prompt, then an answer and a feedback per revision
        elif revisions:
            chat = protocol.feedback_messages(
                settings.feedback_system, "", "", [("", "")] * (revisions - 1), settings.feedback_template
            )
            texts = 2 * revisions  # the prompt, T answers, T - 1 feedbacks
        else:
            continue
        rendered = protocol.render_chat(tokenizer, chat)
        overhead = len(tokenizer(rendered, add_special_tokens=False)["input_ids"]) + BOUNDARY_SLACK_TOKENS * texts
        context = getattr(config.agents, agent).max_model_len
        args = (context, overhead, response_tokens, feedback_tokens, revisions)
        budget = conversation_prompt_budget(*args) if agent == "conversation" else feedback_prompt_budget(*args)
        assert budget is not None
        if budget < 1:
            raise ValueError(
                f"agents.{agent}.max_model_len {context} leaves no room for a prompt: its longest turn needs "
                f"{overhead} tokens of templates and {context - overhead - budget} of generated turns "
                f"(agents.conversation/feedback.generation.max_new_tokens {response_tokens}/{feedback_tokens}, "
                f"rollout.t_max {revisions})"
            )
        budgets[agent] = budget
    return budgets


def fit_prompts_to_context(
    prompts: Sequence[Prompt],
    config: WaltzConfig,
    tokenizers: Mapping[AgentName, Any] | None = None,
    *,
    what: str = "prompts",
) -> tuple[list[Prompt], int]:
    """Drop the prompts too long for some turn of an episode to fit its agent's context (``prompt_budgets``); returns
    the rest, in order, and how many were dropped (logged; ValueError when none is left). ``tokenizers``: each
    agent's tokenizer (loaded from the config's model paths when omitted)."""
    if tokenizers is None:
        from waltz_ray.engines.hf import load_tokenizer
        from waltz_ray.worlds import resolve_model_path

        paths = {a: resolve_model_path(getattr(config.agents, a).model_path, config) for a in AGENTS}
        tokenizers = {a: load_tokenizer(path) for a, path in paths.items()}
    budgets = prompt_budgets(config, tokenizers)
    kept, dropped = list(prompts), 0
    for agent, budget in budgets.items():
        tokenizer = tokenizers[agent]

        def count(text: str, tokenizer: Any = tokenizer) -> int:
            return len(tokenizer(text, add_special_tokens=False)["input_ids"])

        kept, n = filter_by_length(kept, count, budget, what=f"{what} (the {agent} agent's context)")
        dropped += n
    if prompts and not kept:
        raise ValueError(
            f"all {len(prompts)} {what} are too long for the agents' contexts ({budgets} prompt tokens at most): "
            "raise agents.<agent>.max_model_len or lower agents.<agent>.generation.max_new_tokens"
        )
    return kept, dropped
