"""The sequence contract (rlhf.sequences) on the model families users bring, and the failures rebuilt from
other frameworks' bug reports (issue 16), each with its right value."""

from __future__ import annotations

import json
import math
import warnings

import pytest
import torch

from rlhf import sequences as S
from rlhf.cli import main
from rlhf.io import write_jsonl

TEA_PROMPT = "Question: what is tea? Answer:"
SKY_TEXTS = [
    ("Question: is the sky blue? Answer:", "yes."),
    ("Question: is the sky blue? Answer:", "no, it is green."),
    ("Question: is the grass green? Answer:", "yes, it is green."),
]


def tokenizer_of(path):
    from rlhf.models import load_tokenizer

    with warnings.catch_warnings():
        # gpt2 and llama have no pad token: said once per path (tests/test_models.py), expected here
        warnings.filterwarnings("ignore", message=".*no pad token")
        return load_tokenizer(path)


def saved_reward_model(path, out, seed: int = 0):
    """A reward model with random heads on the family's backbone, saved as `rlhf reward train` saves it."""
    from rlhf.reward_model import init_reward_model, save_reward_model

    model, tokenizer = init_reward_model(path, ["helpful"], 1, seed=seed)
    save_reward_model(out, model, tokenizer)
    return out


@torch.no_grad()
def transformers_score(model_dir, input_ids: list[int]) -> float:
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    return model(input_ids=torch.tensor([input_ids])).logits[0, 0].item()


# ----------------------------------------------------------------------------- unit rules


class FakeTokenizer:
    """Ids by hand: 'a' -> 5, ' a' -> 6; BOS 1 added, EOS 2 (optionally appended)."""

    bos_token_id, eos_token_id, pad_token_id, eos_token = 1, 2, 2, "</s>"
    chat_template = None

    def __init__(self, appends_eos: bool = False):
        self.appends_eos = appends_eos

    def __call__(self, text, add_special_tokens=True):
        if isinstance(text, list):
            return {"input_ids": [self(t, add_special_tokens)["input_ids"] for t in text]}
        ids = [5 if w == "a" else 7 for w in text.split()]
        if add_special_tokens:
            ids = [1, *ids] + ([2] if self.appends_eos else [])
        return {"input_ids": ids}


def test_special_tokens_are_found_by_encoding_a_probe():
    assert S.special_tokens(FakeTokenizer()) == S.SpecialTokens(1, 2, 2, adds_bos=True, appends_eos=False)
    assert S.special_tokens(FakeTokenizer(appends_eos=True)).appends_eos


def test_prompt_has_one_bos_and_never_an_eos():
    tok = FakeTokenizer(appends_eos=True)
    assert S.encode_prompt(tok, "a b") == [1, 5, 7]  # BOS added, the appended EOS is not
    assert S.with_bos(tok, [1, 5]) == [1, 5]  # a template that already emitted BOS: not a second one
    # scored texts: tokenizer(text) as it is, a duplicated BOS collapsed, cut from the left keeping BOS
    assert S.encode_scored(tok, ["a b a"], 10) == [[1, 5, 7, 5, 2]]
    assert S.encode_scored(tok, ["a b a b"], 4) == [[1, 5, 7, 2]]  # [1, 5, 7, 5, 7, 2]: BOS + last 3


def test_truncate_left_keeps_bos():
    assert S.truncate_left([1, 5, 6, 7, 8], 3, bos_id=1) == [1, 7, 8]
    assert S.truncate_left([5, 6, 7, 8], 3, bos_id=1) == [6, 7, 8]
    assert S.truncate_left([1, 5], 3, bos_id=1) == [1, 5]


def test_score_position_is_transformers_rule():
    # pad 0: rows [3, 4, 0, 0] -> position 1; [3, 0, 4, 0] -> 2 (last non-pad, not first pad - 1)
    ids = torch.tensor([[3, 4, 0, 0], [3, 0, 4, 0], [3, 4, 5, 6]])
    assert S.score_positions(ids, 0).tolist() == [1, 2, 3]


def test_context_length_from_each_family_config():
    from transformers import GPT2Config, GPTNeoXConfig, LlamaConfig

    assert S.context_length(GPT2Config(n_positions=48)) == 48
    assert S.context_length(GPTNeoXConfig(max_position_embeddings=96)) == 96
    assert S.context_length(LlamaConfig(max_position_embeddings=64)) == 64
    assert S.cap_length(512, GPT2Config(n_positions=48)) == 48


# ----------------------------------------------------------------------------- issue 16's failures


def test_1_reward_score_equals_transformers_when_the_tokenizer_appends_eos(family_dir, tmp_path):
    # gpt2_eos appends EOS to every input and has no pad (pad = EOS): transformers scores the last token
    # that is not the pad id, the one before the EOS; rlhf scored the EOS (up to 2.3 apart before)
    path = family_dir("gpt2_eos")
    model_dir = saved_reward_model(path, tmp_path / "rm")
    data = tmp_path / "rows.jsonl"
    write_jsonl(data, [{"prompt": p, "response": r} for p, r in SKY_TEXTS])
    assert main(["reward", "score", "--model", str(model_dir), "--data", str(data), "--out", str(tmp_path / "s.jsonl"), "--device", "cpu"]) == 0  # fmt: skip
    ours = [json.loads(line)["score"] for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    tokenizer = tokenizer_of(model_dir)
    theirs = [transformers_score(model_dir, tokenizer(f"{p} {r}")["input_ids"]) for p, r in SKY_TEXTS]
    assert tokenizer(f"{SKY_TEXTS[0][0]} yes.")["input_ids"][-1] == tokenizer.eos_token_id
    assert ours == pytest.approx(theirs, abs=1e-5)
    assert max(theirs) - min(theirs) > 1e-3  # the texts score differently: the check can fail


def test_2_dpo_and_ilql_responses_are_the_tail_of_the_joint_encoding(family_dir):
    from rlhf.algorithms import dpo, ilql
    from rlhf.data import PreferencePair
    from rlhf.data.responses import RewardedResponse

    tokenizer = tokenizer_of(family_dir("llama2"))
    pair = PreferencePair(TEA_PROMPT, "tea is a warm drink.", "no.")
    [batch] = dpo.make_batches([pair], tokenizer, dpo.DPOConfig(batch_size=1))
    chosen = batch.input_ids[0][batch.attention_mask[0].bool()].tolist()
    tokens = tokenizer.convert_ids_to_tokens(chosen)
    # right value: one BOS, the prompt, then `▁tea ▁is ...` as in the joint encoding, then one EOS;
    # before, the response was encoded alone: `… ▁Answer:` + `▁` + `▁tea …`, decoding with two spaces
    joint = tokenizer(f"{TEA_PROMPT} tea is a warm drink.")["input_ids"]
    assert chosen == joint + [tokenizer.eos_token_id]
    assert tokens[0] == "<s>" and tokens.count("<s>") == 1 and "▁" not in tokens
    assert tokenizer.decode(chosen, skip_special_tokens=True) == f"{TEA_PROMPT} tea is a warm drink."
    row = RewardedResponse(TEA_PROMPT, "tea is a warm drink.", 1.0, "x:1")
    [ilql_batch] = ilql.make_batches([row], tokenizer, ilql.ILQLConfig(batch_size=1))
    assert ilql_batch.input_ids[0][ilql_batch.attention_mask[0].bool()].tolist() == chosen


def test_3_prompts_longer_than_the_context_are_cut_not_a_crash(family_dir, tmp_path, capsys, recwarn):
    # GPT-2 with 48 positions and a prompt of about 146 tokens: IndexError with a traceback before
    path = family_dir("gpt2", n_positions=48)
    long_prompt = "Question: " + "is the sky blue and is the grass green? " * 16 + "Answer:"
    tokenizer = tokenizer_of(path)
    assert len(tokenizer(long_prompt)["input_ids"]) > 140
    model_dir = saved_reward_model(path, tmp_path / "rm")
    data = tmp_path / "rows.jsonl"
    write_jsonl(data, [{"prompt": long_prompt, "response": "yes."}])
    assert main(["reward", "score", "--model", str(model_dir), "--data", str(data), "--out", str(tmp_path / "s.jsonl"), "--device", "cpu"]) == 0  # fmt: skip
    ours = json.loads((tmp_path / "s.jsonl").read_text())["score"]
    # right value: the last 48 tokens (the end, which is scored), as plain transformers scores them
    ids = tokenizer(f"{long_prompt} yes.")["input_ids"][-48:]
    assert ours == pytest.approx(transformers_score(model_dir, ids), abs=1e-5)

    prompts = tmp_path / "prompts.jsonl"
    write_jsonl(prompts, [{"prompt": long_prompt}, {"prompt": TEA_PROMPT}])
    code = main(["ppo", "train", "--policy", str(path), "--reward", "tests.test_sequences:brevity",
                 "--prompts", str(prompts), "--out", str(tmp_path / "ppo"),
                 "--set", "ppo.steps=1", "--set", "ppo.batch_size=2", "--set", "ppo.mini_batch_size=2",
                 "--set", "ppo.max_new_tokens=8", "--set", "run.device=cpu"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0, err
    assert "Traceback" not in err
    assert any("1 of 2 prompts are longer than the 40 tokens" in str(w.message) for w in recwarn)


def brevity(prompts, responses):
    return [-len(r) / 10 for r in responses]


def none_for_the_first(prompts, responses):
    return [None, *[1.0] * (len(responses) - 1)]


def test_4_a_reward_function_returning_none_is_a_one_line_error(tiny_lm_dir, tmp_path, capsys):
    from rlhf.errors import UserError
    from rlhf.rewards import check_scores, load_reward_source

    score = load_reward_source("tests.test_sequences:none_for_the_first")
    with pytest.raises(UserError, match=r"returned NoneType for response 0; expected a number"):
        score(["p", "q"], ["a", "b"])
    for bad, message in [
        ("1.0", "returned str; expected a list of 2 numbers"),
        ([1.0, "x"], "returned str for response 1"),
        ([1.0, [2.0]], "returned list for response 1"),
        ([1.0, True], "returned bool for response 1"),
        ([1.0, float("nan")], "returned nan for response 1"),
        ([1.0], "returned 1 scores for 2 responses"),
    ]:
        with pytest.raises(UserError, match=message.replace("(", r"\(")):
            check_scores(bad, 2, "f")
    assert check_scores(torch.tensor([1.0, 2.0]), 2, "f").tolist() == [1.0, 2.0]
    code = main(["ppo", "train", "--policy", str(tiny_lm_dir), "--reward", "tests.test_sequences:none_for_the_first",
                 "--out", str(tmp_path / "ppo"), "--set", "ppo.steps=1", "--set", "ppo.batch_size=2",
                 "--set", "ppo.mini_batch_size=2", "--set", "ppo.max_new_tokens=4", "--set", "run.device=cpu"])  # fmt: skip
    err = capsys.readouterr().err
    assert code != 0 and "Traceback" not in err
    assert "returned NoneType for response 0" in err.strip().splitlines()[-1]


def test_5_dpo_loss_is_log_2_at_the_start_for_a_model_with_dropout(family_dir, tmp_path):
    from rlhf.algorithms.dpo import DPOConfig, train
    from rlhf.config import RunConfig

    path = family_dir("gpt2")  # GPT-2's default dropout 0.1: margin -0.0064, loss 0.6964 before
    words = ["tea", "bread", "rice", "soup", "milk", "cake", "fish", "beans"]
    pairs = [
        {"prompt": f"Question: what is {w}? Answer:", "chosen": f"{w} is good.", "rejected": "no."}
        for w in words
    ]
    write_jsonl(tmp_path / "pairs.jsonl", pairs)
    cfg = DPOConfig(model=str(path), data=str(tmp_path / "pairs.jsonl"), batch_size=4, max_steps=1,
                    eval_fraction=0.25, lr=1e-3)  # fmt: skip
    train(cfg, RunConfig(seed=0, device="cpu", tensorboard=False, progress=False), tmp_path / "out", show_progress=False)  # fmt: skip
    logged = [
        json.loads(line) for line in (tmp_path / "out" / "logs" / "metrics.jsonl").read_text().splitlines()
    ]
    first = next(row for row in logged if "loss/dpo" in row)
    assert first["rewards/margin"] == 0.0 and first["loss/dpo"] == pytest.approx(math.log(2), abs=1e-6)


def test_6_a_chat_reward_model_scores_the_text_plain_transformers_scores(family_dir, tmp_path):
    # Qwen2 (ChatML, no BOS) and Llama-3 (the template emits BOS, the tokenizer adds it too): rlhf's score
    # of a conversational row is transformers' score of apply_chat_template(prompt + reply, tokenize=True)
    for family in ("qwen2", "llama3"):
        path = family_dir(family)
        model_dir = saved_reward_model(path, tmp_path / family)
        tokenizer = tokenizer_of(model_dir)
        question = [{"role": "user", "content": "what is tea?"}]
        replies = ["tea is a warm drink.", "no. go away."]
        rows = [{"prompt": question, "response": [{"role": "assistant", "content": r}]} for r in replies]
        write_jsonl(tmp_path / f"{family}.jsonl", rows)
        out = tmp_path / f"{family}_scores.jsonl"
        assert main(["reward", "score", "--model", str(model_dir), "--data", str(tmp_path / f"{family}.jsonl"), "--out", str(out), "--device", "cpu"]) == 0  # fmt: skip
        ours = [json.loads(line)["score"] for line in out.read_text().splitlines()]
        theirs = []
        for r in replies:
            conversation = [*question, {"role": "assistant", "content": r}]
            ids = tokenizer.apply_chat_template(conversation, tokenize=True, return_dict=False)
            assert ids.count(tokenizer.bos_token_id) <= 1 if tokenizer.bos_token_id is not None else True
            theirs.append(transformers_score(model_dir, ids))
        assert ours == pytest.approx(theirs, abs=1e-5), family


# ----------------------------------------------------------------------------- the same kinds, other inputs


def test_eos_strings_in_data(family_dir):
    from rlhf.errors import UserError

    tokenizer = tokenizer_of(family_dir("llama2"))
    plain = S.encode_response(tokenizer, TEA_PROMPT, "tea.")
    assert S.encode_response(tokenizer, TEA_PROMPT, "tea.</s>") == plain  # a trailing EOS string: one EOS
    assert plain.count(tokenizer.eos_token_id) == 1
    with pytest.raises(UserError, match="holds the EOS token '</s>' before its end"):
        S.encode_response(tokenizer, TEA_PROMPT, "tea.</s> and more")


@pytest.mark.parametrize("family", ["gpt2", "neox", "llama2", "llama3", "qwen2"])
def test_a_prompt_ending_in_a_space_gives_what_generate_continues_with(family_dir, family):
    # "Answer: " + "tea": the prompt's last token (a space) does not start the joint encoding's tail; the
    # response is what follows the prompt's own tokens, and the two decode to the whole text
    tokenizer = tokenizer_of(family_dir(family))
    prompt = "Question: what is tea? Answer: "
    prompt_ids = S.encode_prompt(tokenizer, prompt)
    response = S.encode_response(tokenizer, prompt, "tea is a warm drink.", prompt_ids)
    text = tokenizer.decode(prompt_ids + response[:-1], skip_special_tokens=True)
    assert text == prompt + "tea is a warm drink."


def test_pairs_that_truncation_makes_equal_are_counted_and_left_out(family_dir):
    from rlhf.algorithms import dpo
    from rlhf.algorithms.reward import RewardConfig, make_pair_batches
    from rlhf.data import PreferencePair

    tokenizer = tokenizer_of(family_dir("neox"))
    same_start = "tea is a warm drink and " * 4
    pairs = [
        PreferencePair(TEA_PROMPT, same_start + "good.", same_start + "bad."),  # differ only at the end
        PreferencePair(TEA_PROMPT, "tea is a warm drink.", "no."),
    ]
    # DPO cuts responses from the right: at 12 tokens both responses of the first pair are the same
    with pytest.warns(
        UserWarning, match="1 of 2 pairs have the same chosen and rejected tokens once cut to 12"
    ):
        batches = dpo.make_batches(pairs, tokenizer, dpo.DPOConfig(batch_size=4), max_length=12)
    assert sum(len(b) for b in batches) == 1
    # the reward model reads the end of the text (cut from the left): the texts stay different there
    tokenize = lambda prompts, responses: S.encode_scored_pairs(tokenizer, prompts, responses, 12)  # noqa: E731
    assert sum(len(b.chosen) for b in make_pair_batches(pairs, tokenize, ["reward"], 4, RewardConfig())) == 2
    # ... but pairs that differ only at the start of a long prompt's response become equal
    early = [PreferencePair(TEA_PROMPT, "yes. " + same_start, "no. " + same_start)]
    with pytest.warns(UserWarning, match="1 of 1 pairs have the same tokens on both sides"):
        assert make_pair_batches(early, tokenize, ["reward"], 4, RewardConfig()) == []


def test_dpo_reports_the_pairs_it_kept(family_dir, tmp_path):
    """`eval_pairs` counted the pairs read, 2, when truncation had left out one: accuracy over 1 pair was
    reported as over 2."""
    from rlhf.algorithms import dpo
    from rlhf.config import RunConfig

    same_start = "tea is a warm drink and " * 4
    rows = [{"prompt": TEA_PROMPT, "chosen": f"tea {i}.", "rejected": "no."} for i in range(4)]
    write_jsonl(tmp_path / "train.jsonl", rows)
    write_jsonl(tmp_path / "eval.jsonl", [{"prompt": TEA_PROMPT, "chosen": same_start + "good.",
                                           "rejected": same_start + "bad."}, rows[0]])  # fmt: skip
    cfg = dpo.DPOConfig(model=family_dir("neox"), data=str(tmp_path / "train.jsonl"), max_length=12,
                        eval_data=str(tmp_path / "eval.jsonl"), batch_size=2, max_steps=1)  # fmt: skip
    with pytest.warns(UserWarning, match="1 of 2 pairs have the same chosen and rejected tokens"):
        dpo.train(
            cfg,
            RunConfig(device="cpu", progress=False, tensorboard=False),
            tmp_path / "p",
            show_progress=False,
        )
    saved = json.loads((tmp_path / "p" / "eval_metrics.json").read_text())
    assert (saved["train_pairs"], saved["eval_pairs"]) == (4, 1)


def test_a_tokenizer_without_eos_is_a_clear_error():
    from rlhf.errors import UserError

    tokenizer = FakeTokenizer()
    tokenizer.eos_token_id = None
    with pytest.raises(UserError, match="the tokenizer has no EOS token"):
        S.encode_response(tokenizer, "a", "b")


def variant(family_dir, tmp_path, family: str, **changes):
    """A copy of a family's model directory whose tokenizer has `changes` (eos_token, chat_template)."""
    import shutil

    path = tmp_path / f"{family}_variant"
    shutil.copytree(family_dir(family), path)
    tokenizer = tokenizer_of(path)
    for name, value in changes.items():
        setattr(tokenizer, name, value)
    tokenizer.save_pretrained(path)
    return path


def chat_scores(model_dir, tmp_path, replies):
    question = [{"role": "user", "content": "what is tea?"}]
    rows = [{"prompt": question, "response": [{"role": "assistant", "content": r}]} for r in replies]
    write_jsonl(tmp_path / "chat.jsonl", rows)
    out = tmp_path / "chat_scores.jsonl"
    assert main(["reward", "score", "--model", str(model_dir), "--data", str(tmp_path / "chat.jsonl"), "--out", str(out), "--device", "cpu"]) == 0  # fmt: skip
    ours = [json.loads(line)["score"] for line in out.read_text().splitlines()]
    tokenizer = tokenizer_of(model_dir)
    theirs = [
        transformers_score(
            model_dir,
            tokenizer.apply_chat_template(
                [*question, {"role": "assistant", "content": r}], tokenize=True, return_dict=False
            ),
        )  # fmt: skip
        for r in replies
    ]
    return ours, theirs


def test_a_template_whose_end_of_turn_is_not_eos(family_dir, tmp_path):
    # Llama-3 base with eos <|end_of_text|> while turns end with <|eot_id|> (Gemma: <end_of_turn> / <eos>):
    # the end-of-turn was kept in the response and appended again, so the reward model read it twice
    path = variant(family_dir, tmp_path, "llama3", eos_token="<|end_of_text|>")
    model_dir = saved_reward_model(path, tmp_path / "rm")
    ours, theirs = chat_scores(model_dir, tmp_path, ["tea is a warm drink.", "no."])
    assert ours == pytest.approx(theirs, abs=1e-5)
    from rlhf.data.readers import render_prompt, render_response

    tokenizer = tokenizer_of(path)
    question = [{"role": "user", "content": "what is tea?"}]
    prompt = render_prompt(question, tokenizer)
    reply = render_response(question, [{"role": "assistant", "content": "tea."}], tokenizer, prompt, "chosen")
    assert reply == "tea."  # the bare reply: end-of-turn and EOS stripped
    tokens = tokenizer.convert_ids_to_tokens(S.encode_response(tokenizer, prompt, reply))
    assert tokens[-1] == "<|end_of_text|>" and "<|eot_id|>" not in tokens  # the policy stops at its EOS


def test_a_template_that_writes_no_bos_for_a_tokenizer_that_adds_one(family_dir, tmp_path):
    # Phi-3 style: the tokenizer adds <s>, the chat template writes none; apply_chat_template(tokenize=True)
    # has no BOS, and neither does rlhf's chat prompt or scored conversation (there was one extra before)
    template = (
        "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
    )
    path = variant(family_dir, tmp_path, "llama2", chat_template=template)
    tokenizer = tokenizer_of(path)
    question = [{"role": "user", "content": "what is tea?"}]
    from rlhf.data.readers import render_prompt

    prompt = render_prompt(question, tokenizer)
    expected = tokenizer.apply_chat_template(
        question, add_generation_prompt=True, tokenize=True, return_dict=False
    )
    assert S.encode_prompt(tokenizer, prompt) == expected and expected[0] != tokenizer.bos_token_id
    model_dir = saved_reward_model(path, tmp_path / "rm")
    ours, theirs = chat_scores(model_dir, tmp_path, ["tea is a warm drink.", "no."])
    assert ours == pytest.approx(theirs, abs=1e-5)


def opt_falcon_bloom_gpt2():
    from transformers import (
        BloomConfig,
        BloomForCausalLM,
        FalconConfig,
        FalconForCausalLM,
        GPT2Config,
        GPT2LMHeadModel,
        OPTConfig,
        OPTForCausalLM,
    )

    small = dict(vocab_size=64, bos_token_id=0, eos_token_id=1, pad_token_id=2)
    return [
        (OPTForCausalLM, OPTConfig(hidden_size=32, num_hidden_layers=2, ffn_dim=64, num_attention_heads=2,
                                   max_position_embeddings=32, word_embed_proj_dim=32, dropout=0.1,
                                   attention_dropout=0.1, **small)),
        (FalconForCausalLM, FalconConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                         hidden_dropout=0.1, attention_dropout=0.1, **small)),
        (BloomForCausalLM, BloomConfig(hidden_size=32, n_layer=2, n_head=2, hidden_dropout=0.1,
                                       attention_dropout=0.1, **small)),
        (GPT2LMHeadModel, GPT2Config(n_embd=32, n_layer=2, n_head=2, n_positions=32, **small)),
    ]  # fmt: skip


@pytest.mark.parametrize("index", range(4), ids=["opt", "falcon", "bloom", "gpt2"])
def test_disable_dropout_turns_off_every_kind_of_rate_and_saves_the_models_own(tmp_path, index):
    # OPT keeps `dropout` floats for F.dropout, BLOOM and Falcon `hidden_dropout`, and Falcon's layers read
    # config.hidden_dropout in forward: before, only nn.Dropout and attention_dropout were turned off
    # (DPO's first loss 0.6908 for OPT instead of log 2 = 0.6931)
    from rlhf.models import disable_dropout, save_pretrained_atomic

    cls, config = opt_falcon_bloom_gpt2()[index]
    torch.manual_seed(0)
    model = cls(config)
    assert disable_dropout(model) > 0
    model.train()
    ids = torch.randint(3, 64, (2, 12))
    assert torch.equal(model(ids).logits, model(ids).logits)  # train mode, and deterministic
    save_pretrained_atomic(tmp_path / "saved", model)
    saved = json.loads((tmp_path / "saved" / "config.json").read_text())
    rates = {k: v for k, v in config.to_dict().items() if k in saved and "drop" in k and isinstance(v, float)}
    assert rates and all(saved[k] == 0.1 or k == "layerdrop" for k in rates)  # the model's own dropout kept
    assert all(getattr(model.config, k) == 0.0 for k in rates)  # ... while training goes on without it


def test_sampling_with_a_tokenizer_without_eos_is_a_clear_error(family_dir, tmp_path):
    from rlhf.errors import UserError
    from rlhf.models import load_causal_lm
    from rlhf.rollout import SamplingConfig, sample

    model, tokenizer = load_causal_lm(family_dir("neox"), device="cpu", dtype="float32")
    tokenizer.eos_token = None
    with pytest.raises(UserError, match="the tokenizer has no EOS token"):
        sample(model, tokenizer, [TEA_PROMPT], SamplingConfig(max_new_tokens=2))


def test_what_is_remembered_about_a_tokenizer_follows_its_changes(family_dir):
    tokenizer = tokenizer_of(family_dir("qwen2"))
    assert S.chat_markers(tokenizer).end_of_turn == "<|im_end|>\n"
    tokenizer.chat_template = (
        "{% for m in messages %}[{{ m['content'] }}]{% endfor %}{% if add_generation_prompt %}>{% endif %}"
    )
    assert S.chat_markers(tokenizer) == S.ChatMarkers(">", "]")  # not the ChatML markers remembered
    assert S.special_tokens(tokenizer).eos_id == tokenizer.eos_token_id
    tokenizer.eos_token = "<|endoftext|>"
    assert S.special_tokens(tokenizer).eos_id == tokenizer.convert_tokens_to_ids("<|endoftext|>")


def test_a_replys_own_whitespace_is_scored_as_the_template_renders_it(family_dir, tmp_path):
    # ChatML keeps content as written: "Tea.\n" renders "Tea.\n<|im_end|>\n"; the whitespace was stripped
    # before, so the reward model read "Tea.<|im_end|>\n" (-0.4519 against transformers' -0.3833)
    model_dir = saved_reward_model(family_dir("qwen2"), tmp_path / "rm")
    ours, theirs = chat_scores(model_dir, tmp_path, ["Tea.\n", "Tea. ", " Tea.", "Tea."])
    assert ours == pytest.approx(theirs, abs=1e-5)
    assert len({round(t, 4) for t in theirs}) == 4  # four different texts: the check can fail


def test_dpo_rows_of_several_messages_name_their_line_or_are_skipped(family_dir, tmp_path):
    from rlhf.algorithms import dpo
    from rlhf.data import load_preferences
    from rlhf.errors import UserError

    tokenizer = tokenizer_of(family_dir("qwen2"))
    user = {"role": "user", "content": "what is tea?"}
    reply = {"role": "assistant", "content": "tea is a drink."}
    rows = [
        {"prompt": [user], "chosen": [reply], "rejected": [{"role": "assistant", "content": "no."}]},
        {"prompt": [user], "chosen": [reply, {"role": "user", "content": "thanks"}, reply],
         "rejected": [{"role": "assistant", "content": "no!"}]},
    ]  # fmt: skip
    write_jsonl(tmp_path / "pairs.jsonl", rows)
    pairs = load_preferences(tmp_path / "pairs.jsonl", tokenizer=tokenizer).pairs
    with pytest.raises(UserError, match=r"pairs.jsonl:2: a response holds the EOS token '<\|im_end\|>'"):
        dpo.make_batches(pairs, tokenizer, dpo.DPOConfig())
    with pytest.warns(UserWarning, match="1 of 2 pairs have a response no policy could emit; skipped"):
        batches = dpo.make_batches(pairs, tokenizer, dpo.DPOConfig(on_error="skip"))
    assert sum(len(b) for b in batches) == 1


def test_ilql_keeps_the_return_of_a_response_cut_at_the_limit(family_dir):
    from rlhf.algorithms import ilql
    from rlhf.data.responses import RewardedResponse

    tokenizer = tokenizer_of(family_dir("neox"))
    long = "tea is good and " * 10
    n = len(S.encode_response(tokenizer, TEA_PROMPT, long)) - 1  # per-token rewards: one per token before EOS
    rows = [RewardedResponse(TEA_PROMPT, "tea is a warm drink and " * 10, 5.0, "x:1"),
            RewardedResponse(TEA_PROMPT, "no.", -5.0, "x:2"),
            RewardedResponse(TEA_PROMPT, long, (1.0,) * (n - 10) + (2.0,) * 10, "x:3")]  # fmt: skip
    with pytest.warns(UserWarning, match="2 of 3 responses were cut at 24 tokens"):
        [batch] = ilql.make_batches(rows, tokenizer, ilql.ILQLConfig(batch_size=4), max_length=24)
    # each row's return survives the cut: 5.0, -5.0, and (n - 10) x 1 + 10 x 2 = n + 10 (EOS gets 0); before,
    # the first row's reward sat on its EOS, which was cut away, and it trained with a return of 0
    assert sorted(batch.rewards.sum(1).tolist()) == [-5.0, 5.0, n + 10.0]
    assert batch.input_ids.shape[1] <= 2 * 24


def test_a_reward_model_with_another_chat_template_than_the_policy_says_so(family_dir, tmp_path):
    from rlhf.data.readers import render_prompt
    from rlhf.rewards import load_reward_source

    model_dir = saved_reward_model(family_dir("llama3"), tmp_path / "rm")
    policy_tokenizer = tokenizer_of(family_dir("qwen2"))
    prompt = render_prompt([{"role": "user", "content": "what is tea?"}], policy_tokenizer)
    score = load_reward_source(str(model_dir), device="cpu", policy_tokenizer=policy_tokenizer)
    with pytest.warns(UserWarning, match="not the chat template of the reward model"):
        score([prompt], ["tea."])
    same = load_reward_source(str(model_dir), device="cpu", policy_tokenizer=tokenizer_of(model_dir))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from rlhf.data.readers import render_prompt as render

        same([render([{"role": "user", "content": "what is tea?"}], tokenizer_of(model_dir))], ["tea."])
