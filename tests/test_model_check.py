"""`rlhf model check` on the tiny model families: the reported tokens, boundaries, scored positions and
warnings are the real ones, and the policy's marked tokens are exactly encode_prompt + encode_response."""

from __future__ import annotations

import json
import warnings

import pytest

from rlhf import sequences
from rlhf.cli import main
from rlhf.errors import UserError
from rlhf.model_check import DEFAULT_PROMPT, DEFAULT_RESPONSE, check_model, format_check
from rlhf.models import load_tokenizer
from tests.families import FAMILIES


def codes(report):
    return {w["code"] for w in report["warnings"]}


@pytest.fixture(scope="module")
def reports(family_dir):
    return {name: check_model(str(family_dir(name))) for name in FAMILIES}


@pytest.mark.parametrize("name", FAMILIES)
def test_marked_tokens_are_the_contract(reports, family_dir, name):
    """Each example's prompt | response ids are encode_prompt + encode_response, the tokens are those ids,
    and the reward ids are encode_scored of scored_text."""
    with warnings.catch_warnings():  # "no pad token; using EOS": the report says it
        warnings.simplefilter("ignore")
        tokenizer = load_tokenizer(family_dir(name))
    for example in reports[name]["examples"]:
        policy, reward = example["policy"], example["reward"]
        prompt_ids = sequences.encode_prompt(tokenizer, example["prompt"])
        response_ids = sequences.encode_response(tokenizer, example["prompt"], example["response"])
        assert policy["prompt_ids"] + policy["response_ids"] == prompt_ids + response_ids
        assert policy["prompt_tokens"] == tokenizer.convert_ids_to_tokens(prompt_ids)
        assert policy["response_tokens"] == tokenizer.convert_ids_to_tokens(response_ids)
        assert policy["response_ids"][-1] == tokenizer.eos_token_id
        text = sequences.scored_text(tokenizer, example["prompt"], example["response"])
        assert reward["text"] == text
        assert reward["ids"] == sequences.encode_scored(tokenizer, [text], 10_000)[0]
        assert reward["tokens"][reward["scored_position"]] == reward["scored_token"]
    assert json.loads(json.dumps(reports[name])) == reports[name]  # --json prints it as it is


def test_gpt2_pad_set_to_eos(reports):
    report = reports["gpt2"]
    special = report["special"]
    assert special["bos"] == {"token": "<|endoftext|>", "id": 0}
    assert special["pad"] == special["eos"] == {"token": "<|endoftext|>", "id": 0}
    assert special["pad_set_to_eos"] and not special["adds_bos"] and not special["appends_eos"]
    assert report["chat"]["template"] is False and len(report["examples"]) == 1
    assert report["length"] == dict(
        config=True, context_length=128, context_key="max_position_embeddings", model_max_length=128
    )
    policy = report["examples"][0]["policy"]
    # "Question: what is tea? Answer:" | " tea is a warm drink." + EOS, byte-level BPE
    assert policy["prompt_tokens"] == ["Question", ":", "Ġwhat", "Ġis", "Ġtea", "?", "ĠAnswer", ":"]
    assert policy["response_tokens"] == ["Ġtea", "Ġis", "Ġa", "Ġwarm", "Ġdrink", ".", "<|endoftext|>"]
    reward = report["examples"][0]["reward"]
    # no EOS in the reward input: scored at its last token, the 14th
    assert len(reward["ids"]) == 14 and reward["scored_position"] == 13 and reward["scored_token"] == "."
    assert codes(report) == {"no_pad"}


def test_gpt2_eos_appends_eos_and_scores_the_last_non_eos(reports):
    report = reports["gpt2_eos"]
    assert report["special"]["appends_eos"] and report["special"]["pad_set_to_eos"]
    reward = report["examples"][0]["reward"]
    # tokenizer(text) ends with EOS = pad, which pooling skips: 15 tokens, scored at 13, the "."
    assert reward["tokens"][-2:] == [".", "<|endoftext|>"]
    assert len(reward["ids"]) == 15 and reward["scored_position"] == 13 and reward["scored_token"] == "."
    assert report["examples"][0]["policy"]["prompt_tokens"][-1] == ":"  # no EOS in the prompt
    assert codes(report) == {"no_pad", "appends_eos"}
    no_pad = next(w for w in report["warnings"] if w["code"] == "no_pad")["message"]
    assert "scored at '.'" in no_pad


def test_neox_has_a_pad_token(reports):
    report = reports["neox"]
    assert report["special"]["pad"] == {"token": "<|padding|>", "id": 1}
    assert not report["special"]["pad_set_to_eos"]
    assert codes(report) == set()


def test_llama2_adds_bos_and_has_the_dummy_prefix(reports):
    report = reports["llama2"]
    assert report["special"]["adds_bos"] and report["special"]["bos"] == {"token": "<s>", "id": 1}
    policy = report["examples"][0]["policy"]
    assert policy["prompt_tokens"][0] == "<s>"
    assert policy["response_tokens"] == ["▁tea", "▁is", "▁a", "▁warm", "▁drink", ".", "</s>"]
    # " tea is a warm drink." alone gets a dummy "▁" in front
    assert policy["response_alone_tokens"] == ["▁", "▁tea", "▁is", "▁a", "▁warm", "▁drink", "."]
    assert codes(report) == {"no_pad", "dummy_prefix"}


def test_llama3_template_emits_bos_twice(reports):
    report = reports["llama3"]
    chat = report["chat"]
    assert chat["template"] and chat["emits_bos"] and report["special"]["adds_bos"]
    assert chat["generation_prompt"] == "<|start_header_id|>assistant<|end_header_id|>\n\n"
    assert chat["end_of_turn"] == "<|eot_id|>" and chat["end_of_turn_is_eos"]
    example = report["examples"][1]
    assert example["name"] == "chat" and example["chat_prompt"]
    # the template's BOS and the tokenizer's: plain tokenizer(text) has two, rlhf one
    assert example["reward"]["plain_leading_bos"] == 2
    assert example["policy"]["prompt_tokens"][:2] == ["<|begin_of_text|>", "<|start_header_id|>"]
    assert example["reward"]["tokens"][:2] == ["<|begin_of_text|>", "<|start_header_id|>"]
    # the scored text ends with the end-of-turn <|eot_id|> = EOS = pad: scored at the "." before it
    reward = example["reward"]
    assert reward["tokens"][-1] == "<|eot_id|>" and reward["scored_position"] == len(reward["ids"]) - 2
    assert codes(report) == {"no_pad", "double_bos"}


def test_qwen2_has_no_bos_and_chatml_markers(reports):
    report = reports["qwen2"]
    assert report["special"]["bos"] == {"token": None, "id": None} and not report["special"]["adds_bos"]
    assert report["special"]["pad"]["token"] == "<|endoftext|>" and not report["special"]["pad_set_to_eos"]
    chat = report["chat"]
    assert chat["end_of_turn"] == "<|im_end|>\n" and chat["generation_prompt"] == "<|im_start|>assistant\n"
    assert chat["end_of_turn_token"] == "<|im_end|>" and chat["end_of_turn_is_eos"] and not chat["emits_bos"]
    reward = report["examples"][1]["reward"]
    # pad is not EOS, so the trailing "\n" of the end-of-turn text is the scored token
    assert (
        reward["tokens"][-2:] == ["<|im_end|>", "Ċ"] and reward["scored_position"] == len(reward["ids"]) - 1
    )
    assert codes(report) == set()


def test_end_of_turn_not_eos_and_no_config(family_dir, tmp_path):
    """A Llama-3 base tokenizer (EOS <|end_of_text|>) with the chat template: the policy would stop at EOS,
    not at the turn's end <|eot_id|>; without config.json the context length is unknown."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(family_dir("llama3"))
    tokenizer.eos_token = "<|end_of_text|>"
    tokenizer.save_pretrained(tmp_path)
    report = check_model(str(tmp_path), prompt="Q: hi? A:", response="hi.", messages_prompt=[
        {"role": "user", "content": "hi?"}
    ])  # fmt: skip
    assert report["chat"]["end_of_turn_token"] == "<|eot_id|>" and not report["chat"]["end_of_turn_is_eos"]
    assert report["length"]["context_length"] is None and report["model_type"] is None
    assert codes(report) == {"no_pad", "double_bos", "end_of_turn_not_eos", "no_context_length"}
    assert report["examples"][0]["response"] == "hi." and "hi?" in report["examples"][1]["prompt"]


def test_missing_path_and_no_tokenizer(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        check_model(str(tmp_path / "nope"))
    with pytest.raises(UserError, match="no tokenizer"):
        check_model(str(tmp_path))


def test_format_marks_boundary_and_scored_token(reports):
    text = format_check(reports["gpt2_eos"])
    policy = next(line for line in text.splitlines() if line.strip().startswith("policy:"))
    assert policy.split("policy:")[1].strip() == (
        "[prompt] Question : Ġwhat Ġis Ġtea ? ĠAnswer : | [response] Ġtea Ġis Ġa Ġwarm Ġdrink . <|endoftext|>"
    )
    assert "Ġdrink [[.]] <|endoftext|>" in text
    assert "- appends_eos:" in text and "- no_pad:" in text


def test_cli(capsys, family_dir, tmp_path):
    path = str(family_dir("qwen2"))
    assert main(["model", "check", path]) == 0
    out = capsys.readouterr().out
    assert "end of turn: '<|im_end|>\\n'" in out and "warnings: none" in out

    assert main(["model", "check", path, "--json", "--response", "milk.", "--user", "what is milk?"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [e["response"] for e in report["examples"]] == ["milk.", "milk."]
    assert report["examples"][0]["prompt"] == DEFAULT_PROMPT and DEFAULT_RESPONSE != "milk."
    assert report["examples"][1]["messages"] == [{"role": "user", "content": "what is milk?"}]

    code = main(["model", "check", str(tmp_path / "missing")])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "does not exist" in lines[0] and "Traceback" not in err


def test_model_max_length_below_the_context_is_a_warning(family_dir, tmp_path):
    import shutil

    from transformers import AutoTokenizer

    path = tmp_path / "short"
    shutil.copytree(family_dir("qwen2"), path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.model_max_length = 32
    tokenizer.save_pretrained(path)
    report = check_model(str(path))
    assert report["length"]["context_length"] == 128 and report["length"]["model_max_length"] == 32
    [warning] = [w for w in report["warnings"] if w["code"] == "model_max_length_below_context"]
    assert "below the model's context length 128" in warning["message"]
