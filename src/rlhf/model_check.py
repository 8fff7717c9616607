"""`rlhf model check`: show how rlhf builds sequences for a model's tokenizer, and warn about its pitfalls.

The report is read off the one sequence contract (`rlhf.sequences`), never re-implemented: the special
tokens and what `tokenizer(text)` does with them, the chat template's markers, the context length, and a
rendered example (plain text, and chat when the tokenizer has a template) of the policy's sequence
(`encode_prompt` + `encode_response`, the boundary marked) and of the reward model's (`encode_scored` of
`scored_text`, the scored position marked). Only the tokenizer and the config are loaded, never weights.
"""

from __future__ import annotations

import warnings
from typing import Any

from rlhf import sequences
from rlhf.data.records import join_prompt_response
from rlhf.errors import UserError

DEFAULT_PROMPT = "Question: what is tea? Answer:"
DEFAULT_RESPONSE = "tea is a warm drink."
DEFAULT_MESSAGES = ({"role": "user", "content": "what is tea?"},)
# transformers' model_max_length when the tokenizer names none (VERY_LARGE_INTEGER = int(1e30))
_NO_MAX_LENGTH = int(1e29)
_NO_CUT = 1 << 62  # a max_length that never cuts: the example is shown whole


def check_model(
    path: str,
    prompt: str | None = None,
    response: str | None = None,
    messages_prompt: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    """The sequence report of the model at `path` (a directory or a model id in the local cache).

    `prompt` / `response` make the plain-text example; `messages_prompt` (a list of chat messages, default
    one user turn) rendered with the chat template and the same response make the chat example. The report
    is a JSON-ready dict: `special`, `chat`, `length`, `examples` and `warnings` (a list of {code, message}).
    Raises UserError for a missing path, no tokenizer, or a config that does not load.
    """
    from rlhf.models import load_tokenizer, resolve_model_path

    prompt = DEFAULT_PROMPT if prompt is None else prompt
    response = DEFAULT_RESPONSE if response is None else response
    messages = list(DEFAULT_MESSAGES if messages_prompt is None else messages_prompt)

    directory = resolve_model_path(path, require_config=False)
    with warnings.catch_warnings():  # load_tokenizer's "no pad token" warning: the report says it
        warnings.simplefilter("ignore")
        tokenizer = load_tokenizer(directory)
    config = _load_config(directory)
    warns: list[dict[str, str]] = []

    special = _special_report(tokenizer, _raw_pad_token(directory))
    chat = _chat_report(tokenizer)
    length = _length_report(tokenizer, config)
    examples = [_example(tokenizer, "plain", prompt, response)]
    if chat["template"]:
        try:
            rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception as exc:  # noqa: BLE001 - a template that fails on these messages is a finding
            warns.append(_warn("chat_template_failed", f"the chat template failed on {messages}: {exc}"))
        else:
            examples.append(_example(tokenizer, "chat", rendered, response, messages))

    warns += _warnings(tokenizer, special, chat, length, examples)
    return dict(
        path=str(directory),
        tokenizer_class=type(tokenizer).__name__,
        model_type=getattr(config, "model_type", None),
        vocab_size=len(tokenizer),
        special=special,
        chat=chat,
        length=length,
        examples=examples,
        warnings=warns,
    )


# ----------------------------------------------------------------------------- loading


def _load_config(directory: Any) -> Any:
    """The model's config, or None when the directory holds only a tokenizer."""
    from transformers import AutoConfig

    if not (directory / "config.json").is_file():
        return None
    try:
        return AutoConfig.from_pretrained(str(directory), local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - a corrupt or foreign config is a user-facing error
        raise UserError(f"could not load the config in {directory}: {str(exc).splitlines()[0]}") from exc


def _raw_pad_token(directory: Any) -> str | None:
    """The pad token the tokenizer was saved with, before rlhf's load_tokenizer sets a missing one to EOS."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(directory), local_files_only=True).pad_token


# ----------------------------------------------------------------------------- report parts


def _special_report(tokenizer: Any, raw_pad: str | None) -> dict[str, Any]:
    found = sequences.special_tokens(tokenizer)
    return dict(
        bos=dict(token=tokenizer.bos_token, id=found.bos_id),
        eos=dict(token=tokenizer.eos_token, id=found.eos_id),
        pad=dict(token=tokenizer.pad_token, id=found.pad_id),
        adds_bos=found.adds_bos,
        appends_eos=found.appends_eos,
        pad_set_to_eos=raw_pad is None and tokenizer.pad_token is not None,
    )


def _chat_report(tokenizer: Any) -> dict[str, Any]:
    """Whether there is a template, whether it writes BOS itself, its markers and its end-of-turn token."""
    report = dict(
        template=bool(getattr(tokenizer, "chat_template", None)),
        emits_bos=None,
        generation_prompt=None,
        end_of_turn=None,
        end_of_turn_token=None,
        end_of_turn_special=None,
        end_of_turn_is_eos=None,
    )
    if not report["template"]:
        return report
    try:
        one = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
        report["emits_bos"] = bool(tokenizer.bos_token) and one.startswith(tokenizer.bos_token)
    except Exception:  # noqa: BLE001 - reported by the chat example's warning
        pass
    markers = sequences.chat_markers(tokenizer)
    if markers is None:
        return report
    report["generation_prompt"] = markers.generation_prompt
    report["end_of_turn"] = markers.end_of_turn
    ids = tokenizer(markers.end_of_turn, add_special_tokens=False)["input_ids"]
    if ids:
        added = getattr(tokenizer, "added_tokens_decoder", {}).get(ids[0])
        report["end_of_turn_token"] = tokenizer.convert_ids_to_tokens(ids[0])
        report["end_of_turn_special"] = bool(added is not None and added.special) or (
            ids[0] in tokenizer.all_special_ids
        )
        report["end_of_turn_is_eos"] = ids[0] == tokenizer.eos_token_id
    return report


def _length_report(tokenizer: Any, config: Any) -> dict[str, Any]:
    context = sequences.context_length(config) if config is not None else None
    key = next((k for k in sequences.CONTEXT_KEYS if getattr(config, k, None) == context), None)
    max_length = getattr(tokenizer, "model_max_length", None)
    return dict(
        config=config is not None,
        context_length=context,
        context_key=key if context is not None else None,
        model_max_length=max_length if max_length is not None and max_length < _NO_MAX_LENGTH else None,
    )


def _tokens(tokenizer: Any, ids: list[int | None]) -> list[str]:
    return [str(tokenizer.convert_ids_to_tokens(i)) if i is not None else "None" for i in ids]


def _example(
    tokenizer: Any, name: str, prompt: str, response: str, messages: list | None = None
) -> dict[str, Any]:
    """One prompt + response as the policy's ids and the reward model's ids, with the scored position."""
    import torch

    prompt_ids = sequences.encode_prompt(tokenizer, prompt)
    response_ids = sequences.encode_response(tokenizer, prompt, response, prompt_ids)
    # the response tokens written on their own, without the prompt (what naive code would train on)
    continuation = join_prompt_response(prompt, sequences.strip_eos_text(tokenizer, response))[len(prompt) :]
    alone = tokenizer(continuation, add_special_tokens=False)["input_ids"]

    text = sequences.scored_text(tokenizer, prompt, response)
    scored = sequences.encode_scored(tokenizer, [text], max_length=_NO_CUT)[0]
    position = int(sequences.score_positions(torch.tensor([scored]), tokenizer.pad_token_id)[0])
    plain = tokenizer(text)[
        "input_ids"
    ]  # plain transformers: tokenizer(text), special tokens as it adds them
    return dict(
        name=name,
        messages=messages,
        prompt=prompt,
        response=response,
        chat_prompt=sequences.is_chat_prompt(tokenizer, prompt),
        policy=dict(
            prompt_ids=prompt_ids,
            prompt_tokens=_tokens(tokenizer, prompt_ids),
            response_ids=response_ids,
            response_tokens=_tokens(tokenizer, response_ids),
            response_alone_ids=alone,
            response_alone_tokens=_tokens(tokenizer, alone),
        ),
        reward=dict(
            text=text,
            ids=scored,
            tokens=_tokens(tokenizer, scored),
            scored_position=position,
            scored_token=_tokens(tokenizer, [scored[position]])[0],
            plain_leading_bos=_leading(plain, tokenizer.bos_token_id),
        ),
    )


def _leading(ids: list[int], token_id: int | None) -> int:
    count = 0
    while token_id is not None and count < len(ids) and ids[count] == token_id:
        count += 1
    return count


# ----------------------------------------------------------------------------- warnings


def _warn(code: str, message: str) -> dict[str, str]:
    return dict(code=code, message=message)


def _warnings(tokenizer: Any, special: dict, chat: dict, length: dict, examples: list[dict]) -> list[dict]:
    """The pitfalls this tokenizer and config fall into, each with what rlhf does about it."""
    out = []
    eos, bos = special["eos"]["token"], special["bos"]["token"]
    plain = examples[0]
    if eos is None:
        out.append(
            _warn(
                "no_eos",
                "the tokenizer has no EOS token: a policy's responses never end, and encode_response "
                "ends each response with None where EOS belongs; save the tokenizer with an EOS token",
            )
        )
    if special["pad_set_to_eos"]:
        ending = [e for e in examples if e["reward"]["ids"][-1] == special["eos"]["id"]]
        where = (
            f"; in the {ending[0]['name']} example the text ends with EOS and is scored at "
            f"{ending[0]['reward']['scored_token']!r}, the last token that is not EOS"
            if ending
            else ""
        )
        out.append(
            _warn(
                "no_pad",
                f"the tokenizer has no pad token: rlhf uses EOS {eos!r} as pad, so a reward model reads "
                f"each text at its last token that is not EOS (transformers' pooling skips trailing pad)"
                + where,
            )
        )
    if special["appends_eos"]:
        out.append(
            _warn(
                "appends_eos",
                f"tokenizer(text) appends EOS {eos!r}: rlhf keeps it out of prompts and ends each response "
                "with exactly one EOS; the reward model's input keeps it, as tokenizer(text) does",
            )
        )
    if chat["emits_bos"] and special["adds_bos"]:
        counts = [e["reward"]["plain_leading_bos"] for e in examples if e["name"] == "chat"]
        out.append(
            _warn(
                "double_bos",
                f"the chat template writes BOS {bos!r} and tokenizer(text) adds it again: plain "
                f"tokenizer(apply_chat_template(..., tokenize=False)) gives "
                f"{counts[0] if counts else 2} BOS tokens; rlhf keeps one (encode_prompt, encode_scored)",
            )
        )
    if chat["template"] and chat["generation_prompt"] is None:
        out.append(
            _warn(
                "no_generation_prompt",
                "the chat template has no separate generation prompt (Llama-2 / Mistral [INST] style): rlhf "
                "treats rendered prompts as plain text, so the reward model reads prompt + reply without the "
                "template's closing text; apply_chat_template(prompt + reply, tokenize=True) ends with it, "
                "and scores the same only when that closing text is EOS and pad = EOS (the default without "
                "a pad token); with another pad token, score through rlhf or leave the closing text off",
            )
        )
    if chat["end_of_turn_special"] and not chat["end_of_turn_is_eos"]:
        out.append(
            _warn(
                "end_of_turn_not_eos",
                f"the chat template ends a turn with {chat['end_of_turn_token']!r} but EOS is {eos!r}: "
                "a policy stops at EOS, so chat rollouts run past the end of the turn (save the tokenizer "
                "with the end-of-turn token as its EOS)",
            )
        )
    tail, alone = plain["policy"]["response_ids"][:-1], plain["policy"]["response_alone_ids"]
    if alone != tail:
        dummy = alone[1:] == tail and _tokens(tokenizer, alone[:1])[0].strip() in ("▁", "")
        out.append(
            _warn(
                "dummy_prefix" if dummy else "response_alone_differs",
                f"the response encoded alone is {plain['policy']['response_alone_tokens']} but after the "
                f"prompt it is {plain['policy']['response_tokens'][:-1]}"
                + (" (SentencePiece's dummy prefix)" if dummy else "")
                + ": rlhf uses the tokens in running text (what the policy emits); code that encodes "
                "responses on their own trains on different tokens",
            )
        )
    if length["context_length"] is None:
        why = "the config names no context length" if length["config"] else "there is no config.json"
        out.append(
            _warn(
                "no_context_length",
                f"{why} ({', '.join(sequences.CONTEXT_KEYS)}): rlhf cannot cap sequence lengths at it; "
                "set max lengths in the config yourself",
            )
        )
    context, tokenizer_max = length["context_length"], length["model_max_length"]
    if context is not None and tokenizer_max is not None and tokenizer_max < context:
        out.append(
            _warn(
                "model_max_length_below_context",
                f"tokenizer.model_max_length is {tokenizer_max}, below the model's context length {context}: "
                f"rlhf caps lengths at the context ({context}); transformers will warn about sequences "
                f"longer than {tokenizer_max} (set model_max_length to {context} if that is the real limit)",
            )
        )
    return out


# ----------------------------------------------------------------------------- text


def _policy_line(policy: dict) -> str:
    return (
        "[prompt] "
        + " ".join(policy["prompt_tokens"])
        + " | [response] "
        + " ".join(policy["response_tokens"])
    )


def _reward_line(reward: dict) -> str:
    tokens = list(reward["tokens"])
    tokens[reward["scored_position"]] = f"[[{tokens[reward['scored_position']]}]]"
    return " ".join(tokens)


def _token(entry: dict) -> str:
    return "none" if entry["token"] is None else f"{entry['token']!r} (id {entry['id']})"


def _yes(value: bool | None) -> str:
    return "?" if value is None else ("yes" if value else "no")


def format_check(report: dict[str, Any]) -> str:
    """The report of `check_model` as text for a terminal."""
    special, chat, length = report["special"], report["chat"], report["length"]
    pad_note = "  (the tokenizer has none: rlhf set it to EOS)" if special["pad_set_to_eos"] else ""
    lines = [
        f"model: {report['path']}",
        f"  tokenizer {report['tokenizer_class']}, vocab {report['vocab_size']}; "
        f"model type {report['model_type'] or '? (no config)'}",
        "special tokens",
        f"  BOS {_token(special['bos'])}; tokenizer(text) adds it: {_yes(special['adds_bos'])}",
        f"  EOS {_token(special['eos'])}; tokenizer(text) appends it: {_yes(special['appends_eos'])}",
        f"  pad {_token(special['pad'])}{pad_note}",
    ]
    if not chat["template"]:
        lines.append("chat template: none")
    else:
        lines += ["chat template: yes", f"  writes BOS itself: {_yes(chat['emits_bos'])}"]
        if chat["generation_prompt"] is None:
            lines.append("  generation prompt: none (rlhf reads rendered prompts as plain text)")
        else:
            lines += [
                f"  generation prompt: {chat['generation_prompt']!r}",
                f"  end of turn: {chat['end_of_turn']!r}; its first token {chat['end_of_turn_token']!r} "
                f"is EOS: {_yes(chat['end_of_turn_is_eos'])}",
            ]
    key = f" ({length['context_key']})" if length["context_key"] else ""
    lines += [
        "length",
        f"  context length from the config{key}: {length['context_length'] or 'none'}",
        f"  tokenizer.model_max_length: {length['model_max_length'] or 'not set'}",
    ]
    for example in report["examples"]:
        reward = example["reward"]
        lines += [
            f"example: {example['name']}" + (f" {example['messages']}" if example["messages"] else ""),
            f"  prompt:   {example['prompt']!r}",
            f"  response: {example['response']!r}",
            f"  policy:   {_policy_line(example['policy'])}",
            f"  reward:   {_reward_line(reward)}",
            f"            scored at position {reward['scored_position']} (from 0) of {len(reward['ids'])}: "
            f"{reward['scored_token']!r}",
        ]
    lines.append("warnings" + ("" if report["warnings"] else ": none"))
    lines += [f"  - {w['code']}: {w['message']}" for w in report["warnings"]]
    return "\n".join(lines)
