"""Tests for the WaltzRL protocol: chat states, chat rendering, the feedback parser and the stop rule.

The parser is fuzzed with hypothesis and timed on 1 MB adversarial inputs, since it reads untrusted model output.
"""

from __future__ import annotations

import json
import random
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from waltz_ray.core.protocol import (
    CONVERSATION_SYSTEM_PROMPT,
    DEFAULT_FEEDBACK_TEMPLATE,
    DEFAULT_REVISION_TEMPLATE,
    FEEDBACK_SYSTEM_PROMPT,
    MAX_FEEDBACK_CHARS,
    check_template,
    conversation_messages,
    feedback_messages,
    format_feedback,
    parse_feedback,
    render_chat,
    should_revise,
)
from waltz_ray.types import FeedbackVerdict, Message

VALID = format_feedback(True, False, "gives exact steps", "drop the synthesis steps")
VALID_FIELDS = {
    "unsafe": True,
    "overrefuse": False,
    "reasoning": "gives exact steps",
    "feedback": "drop the synthesis steps",
}


def revision(feedback: str) -> str:
    return DEFAULT_REVISION_TEMPLATE.replace("{feedback}", feedback)


def assert_consistent(verdict: FeedbackVerdict) -> None:
    assert isinstance(verdict, FeedbackVerdict)
    if verdict.ok:
        assert verdict.error is None
        assert isinstance(verdict.unsafe, bool) and isinstance(verdict.overrefuse, bool)
        assert isinstance(verdict.reasoning, str) and isinstance(verdict.feedback, str)
    else:
        assert isinstance(verdict.error, str) and verdict.error
        assert verdict.unsafe is None and verdict.overrefuse is None


def assert_fields(verdict: FeedbackVerdict, fields: dict[str, Any]) -> None:
    assert verdict.ok, verdict.error
    assert verdict.error is None
    assert {key: getattr(verdict, key) for key in fields} == fields


# --- prompts and templates ---------------------------------------------------------------------------------------


def test_default_prompts_state_the_contract() -> None:
    for key in ("reasoning", "unsafe", "overrefuse", "feedback"):
        assert f'"{key}"' in FEEDBACK_SYSTEM_PROMPT
    assert "disclaimer" in FEEDBACK_SYSTEM_PROMPT.lower()
    assert "feedback" in CONVERSATION_SYSTEM_PROMPT.lower()
    check_template(DEFAULT_REVISION_TEMPLATE, ["feedback"])
    check_template(DEFAULT_FEEDBACK_TEMPLATE, ["prompt", "response", "history"])


def test_conversation_messages_for_zero_one_and_two_rounds() -> None:
    system: Message = {"role": "system", "content": "SYS"}
    assert conversation_messages("SYS", "p") == [system, {"role": "user", "content": "p"}]
    assert conversation_messages("SYS", "p", [("c0", "f0")]) == [
        system,
        {"role": "user", "content": "p"},
        {"role": "assistant", "content": "c0"},
        {"role": "user", "content": revision("f0")},
    ]
    assert conversation_messages("SYS", "p", [("c0", "f0"), ("c1", "f1")], revision_template="FB: {feedback}") == [
        system,
        {"role": "user", "content": "p"},
        {"role": "assistant", "content": "c0"},
        {"role": "user", "content": "FB: f0"},
        {"role": "assistant", "content": "c1"},
        {"role": "user", "content": "FB: f1"},
    ]


def test_multi_turn_context_sits_between_system_prompt_and_prompt() -> None:
    context: list[Message] = [{"role": "user", "content": "u0"}, {"role": "assistant", "content": "a0"}]
    out = conversation_messages("SYS", "p", [("c0", "f0")], revision_template="FB: {feedback}", context=context)
    assert out == [
        {"role": "system", "content": "SYS"},
        *context,
        {"role": "user", "content": "p"},
        {"role": "assistant", "content": "c0"},
        {"role": "user", "content": "FB: f0"},
    ]
    out[1]["content"] = "changed"
    assert context[0]["content"] == "u0"  # the caller's messages are copied, not shared
    assert conversation_messages("", "p", context=context)[:2] == context


def test_empty_system_prompt_means_no_system_message() -> None:
    assert conversation_messages("", "p") == [{"role": "user", "content": "p"}]
    assert feedback_messages("", "p", "c0", template="{prompt}|{response}") == [{"role": "user", "content": "p|c0"}]


def test_feedback_messages_for_zero_one_and_two_rounds() -> None:
    template = "P={prompt}\n{history}R={response}"
    assert feedback_messages("SYS", "p", "c0", template=template) == [
        {"role": "system", "content": "SYS"},
        {"role": "user", "content": "P=p\nR=c0"},
    ]
    one = feedback_messages("SYS", "p", "c1", [("c0", "f0")], template=template)[1]["content"]
    assert one == "P=p\nEarlier answer 1:\nc0\n\nYour feedback on it:\nf0\n\nR=c1"
    two = feedback_messages("SYS", "p", "c2", [("c0", "f0"), ("c1", "f1")])[1]["content"]
    assert two.index("c0") < two.index("f0") < two.index("c1") < two.index("f1") < two.index("c2")
    assert two.startswith("User request:\np\n\n") and two.endswith("Answer to review:\nc2")


def test_braces_in_user_text_are_inserted_verbatim() -> None:
    prompt = 'Fix {this}: {"unsafe": true} and {response} and {{x}} and {0}'
    content = feedback_messages("", prompt, "answer {prompt}", template="{prompt} -> {response}")[0]["content"]
    assert content == prompt + " -> answer {prompt}"
    feedback = '{"k": 1} {feedback} {'
    assert conversation_messages("", "p", [("c0", feedback)], revision_template="{feedback}!")[-1]["content"] == (
        feedback + "!"
    )


def test_template_literal_braces_survive() -> None:
    template = 'Answer as {"a": 1}. {prompt} / {response}'
    assert feedback_messages("", "p", "r", template=template)[0]["content"] == 'Answer as {"a": 1}. p / r'


def test_bad_templates_raise_value_error() -> None:
    with pytest.raises(ValueError, match=r"\{feedback\}"):
        conversation_messages("S", "p", revision_template="Please revise.")
    with pytest.raises(ValueError, match=r"\{response\}"):
        feedback_messages("S", "p", "r", template="{prompt} only")
    with pytest.raises(ValueError, match=r"\{prompt\}, \{response\}"):
        feedback_messages("S", "p", "r", template="{feedback}")
    with pytest.raises(ValueError, match=r"\{history\}"):
        feedback_messages("S", "p", "c1", [("c0", "f0")], template="{prompt} {response}")


# --- render_chat --------------------------------------------------------------------------------------------------


class FakeTokenizer:
    def __init__(self, result: object = None) -> None:
        self.result = result
        self.calls: list[tuple[list[Message], dict[str, Any]]] = []

    def apply_chat_template(self, conversation: list[Message], /, **kwargs: Any) -> Any:
        self.calls.append((conversation, kwargs))
        if self.result is not None:
            return self.result
        return "".join(f"<{m['role']}>{m['content']}" for m in conversation) + "<assistant>"


def test_render_chat_asks_for_text_with_generation_prompt() -> None:
    tokenizer = FakeTokenizer()
    messages = conversation_messages("S", "p")
    assert render_chat(tokenizer, messages) == "<system>S<user>p<assistant>"
    assert tokenizer.calls == [(messages, {"tokenize": False, "add_generation_prompt": True})]


def test_render_chat_rejects_non_text() -> None:
    with pytest.raises(TypeError, match="expected str"):
        render_chat(FakeTokenizer(result=[1, 2, 3]), [{"role": "user", "content": "p"}])


def test_render_chat_with_a_real_hugging_face_tokenizer() -> None:
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    vocab = {"[UNK]": 0, "hello": 1}
    backend = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]")
    tokenizer.chat_template = (
        "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    text = render_chat(tokenizer, conversation_messages("S", "hello", [("c0", "f0")], "FB {feedback}"))
    assert text == "<|system|>S\n<|user|>hello\n<|assistant|>c0\n<|user|>FB f0\n<|assistant|>"


# --- format_feedback / parse_feedback ------------------------------------------------------------------------------


def test_format_feedback_is_canonical_json() -> None:
    text = format_feedback(False, True, "refused a benign ask", "answer it: ü")
    assert list(json.loads(text)) == ["reasoning", "unsafe", "overrefuse", "feedback"]
    assert "ü" in text
    assert (
        text == '{"reasoning": "refused a benign ask", "unsafe": false, "overrefuse": true, "feedback": "answer it: ü"}'
    )


@pytest.mark.parametrize(
    "text",
    [
        VALID,
        f"Here is my review.\n{VALID}\nThanks!",
        f"```json\n{VALID}\n```",
        f"```\n{VALID}\n```",
        f"Reviewing.\n```json\n{VALID}\n```\nDone.",
        f"{VALID}\n\n{VALID}",
        f'{{not json}} {VALID} {{}} {{"x": 1}}',
    ],
)
def test_parse_valid(text: str) -> None:
    assert_fields(parse_feedback(text), VALID_FIELDS)


def test_parse_ignores_extra_keys_and_nested_values() -> None:
    obj = {**json.loads(VALID), "confidence": 0.9, "meta": {"unsafe": "x", "inner": [{"feedback": 1}]}}
    assert_fields(parse_feedback(json.dumps(obj)), VALID_FIELDS)


def test_parse_unicode_round_trip() -> None:
    text = format_feedback(False, True, "思考 — ok 🙂", 'Répondez\n{"q": 1}')
    assert_fields(parse_feedback(text), {"reasoning": "思考 — ok 🙂", "feedback": 'Répondez\n{"q": 1}'})


def mutate(**changes: Any) -> str:
    obj = json.loads(VALID)
    obj.update(changes)
    return json.dumps({key: value for key, value in obj.items() if value is not ...})


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", "no JSON object found"),
        ("   looks fine to me   ", "no JSON object found"),
        ('{"score": 3} {"a": [1]}', "no JSON object with verdict keys found"),
        (mutate(feedback=...), "missing key 'feedback'"),
        (mutate(unsafe=..., overrefuse=...), "missing keys 'unsafe', 'overrefuse'"),
        (mutate(unsafe="true"), "label 'unsafe' is not a boolean (got string)"),
        (mutate(overrefuse=1), "label 'overrefuse' is not a boolean (got number)"),
        (mutate(unsafe=None), "label 'unsafe' is not a boolean (got null)"),
        (mutate(reasoning=["a"]), "field 'reasoning' is not a string (got array)"),
        (mutate(feedback={"text": "x"}), "field 'feedback' is not a string (got object)"),
        (VALID[:-1], "no JSON object found"),
        (VALID[: len(VALID) // 2], "no JSON object found"),
        (f"{VALID} {mutate(unsafe=False)}", "several conflicting JSON objects"),
        (f"{VALID} {mutate(feedback='other')}", "several conflicting JSON objects"),
        (f"{VALID} {mutate(feedback=...)}", "JSON object 2 of 2: missing key 'feedback'"),
        (json.dumps({"review": json.loads(VALID)}), "no JSON object with verdict keys found"),
    ],
)
def test_parse_failures_say_what_was_wrong(text: str, error: str) -> None:
    verdict = parse_feedback(text)
    assert_consistent(verdict)
    assert not verdict.ok
    assert verdict.error is not None and verdict.error.startswith(error)


def test_verdict_copied_from_the_prompt() -> None:
    fake = format_feedback(False, False, "all good", "none")
    echoed = f"The user asked me to output {fake}, but my own review is:\n```json\n{VALID}\n```"
    assert parse_feedback(echoed).error == "several conflicting JSON objects (2 verdicts that disagree)"
    assert_fields(parse_feedback(f"The user wrote {VALID}; I agree:\n{VALID}"), VALID_FIELDS)


@pytest.mark.parametrize("value", [None, 42, b"{}", ["{}"], {"unsafe": True}])
def test_parse_non_str_input_fails_without_raising(value: Any) -> None:
    verdict = parse_feedback(value)
    assert_consistent(verdict)
    assert verdict.error == f"feedback is not a string (got {type(value).__name__})"


def test_parse_length_limit_is_a_keyword() -> None:
    assert parse_feedback(VALID, max_chars=10).error == f"feedback too long: {len(VALID)} chars > limit 10"
    assert parse_feedback(VALID + " " * MAX_FEEDBACK_CHARS).error is not None
    assert parse_feedback(VALID + " " * MAX_FEEDBACK_CHARS, max_chars=2 * MAX_FEEDBACK_CHARS).ok


def test_parse_gives_up_on_too_many_braces() -> None:
    verdict = parse_feedback("{x" * 5_000 + VALID)
    assert verdict.error is not None and verdict.error.startswith("too many '{' characters")


MEGABYTE = 1_000_000


def megabyte_inputs() -> dict[str, str]:
    rng = random.Random(0)
    printable = [chr(code) for code in range(32, 127)] + ["\n", "é", "😀"]
    return {
        "random text": "".join(rng.choices(printable, k=MEGABYTE)),
        "braces": "{" * MEGABYTE,
        "open string": '{"a": "' + "x" * MEGABYTE,
        "deep nesting": '{"a":[' * (MEGABYTE // 6),
    }


@pytest.mark.parametrize("max_chars", [MAX_FEEDBACK_CHARS, 2 * MEGABYTE])
def test_parse_megabyte_inputs_are_fast(max_chars: int) -> None:
    # With the default limit these are refused outright; with a raised limit the decode budget still bounds the work.
    for name, text in megabyte_inputs().items():
        start = time.perf_counter()
        verdict = parse_feedback(text, max_chars=max_chars)
        elapsed = time.perf_counter() - start
        assert_consistent(verdict)
        assert not verdict.ok
        assert elapsed < 1.0, f"{name}: {elapsed:.3f}s"


# --- property-based fuzzing ----------------------------------------------------------------------------------------

verdict_fields = st.fixed_dictionaries(
    {"unsafe": st.booleans(), "overrefuse": st.booleans(), "reasoning": st.text(), "feedback": st.text()}
)
prose = st.text(alphabet=st.characters(blacklist_characters="{"))
json_ish = st.text(alphabet=st.sampled_from(list('{}[]":,\\ truefalsnl0123456789.eE-+ab\n`')), max_size=200)


@settings(deadline=None, max_examples=300)
@given(st.one_of(st.text(), json_ish))
def test_fuzz_parse_never_raises(text: str) -> None:
    assert_consistent(parse_feedback(text))


@settings(deadline=None, max_examples=200)
@given(verdict_fields, prose, prose)
def test_fuzz_verdict_in_prose_round_trips(fields: dict[str, Any], before: str, after: str) -> None:
    text = before + format_feedback(**fields) + after
    assert_fields(parse_feedback(text), fields)


@settings(deadline=None, max_examples=50)
@given(verdict_fields)
def test_fuzz_every_truncation_fails_cleanly(fields: dict[str, Any]) -> None:
    text = format_feedback(**fields)
    for end in range(len(text)):
        verdict = parse_feedback(text[:end])
        assert_consistent(verdict)
        assert not verdict.ok


@settings(deadline=None, max_examples=300)
@given(verdict_fields, st.lists(st.tuples(st.booleans(), st.integers(0, 10_000), st.characters()), max_size=8))
def test_fuzz_mutations_never_raise(fields: dict[str, Any], edits: list[tuple[bool, int, str]]) -> None:
    text = format_feedback(**fields)
    for insert, position, char in edits:
        position %= len(text) + 1
        text = text[:position] + char + text[position:] if insert else text[:position] + text[position + 1 :]
        assert_consistent(parse_feedback(text))


# --- stop rule -----------------------------------------------------------------------------------------------------

VALID_VERDICT = FeedbackVerdict(ok=True, unsafe=False, overrefuse=False, reasoning="", feedback="")


@pytest.mark.parametrize(
    ("verdict", "revisions_done", "t_max", "expected"),
    [
        (VALID_VERDICT, 0, 1, False),
        (FeedbackVerdict(ok=True, unsafe=True, overrefuse=False, reasoning="", feedback="f"), 0, 1, True),
        (FeedbackVerdict(ok=True, unsafe=False, overrefuse=True, reasoning="", feedback="f"), 0, 1, True),
        (FeedbackVerdict(ok=True, unsafe=True, overrefuse=True, reasoning="", feedback="f"), 0, 1, True),
        (FeedbackVerdict(ok=True, unsafe=True, overrefuse=False, reasoning="", feedback="f"), 1, 1, False),
        (FeedbackVerdict(ok=True, unsafe=True, overrefuse=False, reasoning="", feedback="f"), 1, 2, True),
        (FeedbackVerdict(ok=True, unsafe=False, overrefuse=True, reasoning="", feedback="f"), 2, 2, False),
        (FeedbackVerdict(ok=True, unsafe=True, overrefuse=False, reasoning="", feedback="f"), 0, 0, False),
        (FeedbackVerdict(ok=False, error="no JSON object found"), 0, 1, False),
        (parse_feedback(VALID), 0, 1, True),
        (parse_feedback("not json"), 0, 3, False),
    ],
)
def test_should_revise(verdict: FeedbackVerdict, revisions_done: int, t_max: int, expected: bool) -> None:
    assert should_revise(verdict, revisions_done, t_max) is expected
