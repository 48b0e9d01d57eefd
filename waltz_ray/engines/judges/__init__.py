"""Judges J(prompt, response) -> (unsafe, overrefuse): a rule judge, a local-LLM judge and an HTTP judge.

Cheap to import: httpx and model code are only loaded when a judge actually runs.
"""

from waltz_ray.engines.judges.agreement import AgreementReport, agreement_from_pairs, cohen_kappa, judge_agreement
from waltz_ray.engines.judges.http import HTTPJudge
from waltz_ray.engines.judges.llm import (
    DEFAULT_JUDGE_PARAMS,
    DEFAULT_JUDGE_PROMPT,
    LLMJudge,
    build_judge_chat,
    parse_judge_output,
)
from waltz_ray.engines.judges.refusal import REFUSAL_TEXT, RefusalMatch, detect_refusal
from waltz_ray.engines.judges.refusal_rules import REFUSAL_RULES
from waltz_ray.engines.judges.refusal_vocab import RefusalRule
from waltz_ray.engines.judges.rule import RuleJudge

__all__ = [
    "DEFAULT_JUDGE_PARAMS",
    "DEFAULT_JUDGE_PROMPT",
    "REFUSAL_RULES",
    "REFUSAL_TEXT",
    "AgreementReport",
    "HTTPJudge",
    "LLMJudge",
    "RefusalMatch",
    "RefusalRule",
    "RuleJudge",
    "agreement_from_pairs",
    "build_judge_chat",
    "cohen_kappa",
    "detect_refusal",
    "judge_agreement",
    "parse_judge_output",
]
