"""The compatibility matrix: every model family users bring (tests/families.py) through reward training and
scoring, DPO, ILQL, PPO / GRPO rollouts and evaluation, on plain-text and conversational data, held against
plain transformers (`AutoModelForSequenceClassification` scores, `generate` token ids,
`apply_chat_template`). The sequence contract is docs/sequences.md."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from rlhf import sequences as S
from rlhf.config import RunConfig
from rlhf.io import write_jsonl

RUN = RunConfig(seed=0, device="cpu", tensorboard=False, progress=False)
FAMILIES = ["gpt2", "gpt2_eos", "neox", "llama2", "llama3", "qwen2"]
CHAT = {"llama3", "qwen2"}  # the families whose tokenizer has a chat template
FOODS = ["tea", "bread", "rice", "soup", "milk", "cake", "fish", "beans", "salt", "honey", "apples", "corn"]


def load(path):
    from rlhf.models import load_causal_lm

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no pad token; using EOS": expected for gpt2 and llama
        return load_causal_lm(path, device="cpu", dtype="float32")


def plain_pairs() -> list[dict]:
    return [
        {"prompt": f"Question: what is {w}? Answer:", "chosen": f"{w} is good food.", "rejected": "no."}
        for w in FOODS
    ]


def chat_pairs() -> list[dict]:
    return [
        {
            "prompt": [{"role": "user", "content": f"what is {w}?"}],
            "chosen": [{"role": "assistant", "content": f"{w} is good food."}],
            "rejected": [{"role": "assistant", "content": "no."}],
        }
        for w in FOODS
    ]


def kinds(family: str) -> list[str]:
    return ["plain", "chat"] if family in CHAT else ["plain"]


CASES = [(f, k) for f in FAMILIES for k in kinds(f)]


def pairs_for(kind: str) -> list[dict]:
    return plain_pairs() if kind == "plain" else chat_pairs()


def transformers_ids(tokenizer, row: dict, side: str) -> list[int]:
    """What a user of plain transformers feeds a reward model: `tokenizer(text)` of the joined text, or
    `apply_chat_template(conversation, tokenize=True)`."""
    if isinstance(row["prompt"], str):
        return tokenizer(f"{row['prompt']} {row[side]}")["input_ids"]
    return tokenizer.apply_chat_template(row["prompt"] + row[side], tokenize=True, return_dict=False)


@pytest.mark.parametrize("family,kind", CASES)
def test_reward_model_trains_and_scores_as_transformers(family_dir, tmp_path, family, kind):
    from transformers import AutoModelForSequenceClassification

    from rlhf.algorithms.reward import RewardConfig, train
    from rlhf.data import load_preferences
    from rlhf.models import load_tokenizer
    from rlhf.rewards import load_reward_source

    rows = pairs_for(kind)
    write_jsonl(tmp_path / "pairs.jsonl", rows)
    cfg = RewardConfig(model=str(family_dir(family)), data=str(tmp_path / "pairs.jsonl"), max_steps=2,
                       batch_size=4, eval_fraction=0.25, lr=1e-3, keep_best=False, gold_eval=False)  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train(cfg, RUN, tmp_path / "rm", show_progress=False)
        score = load_reward_source(str(tmp_path / "rm"), device="cpu")
    plain = AutoModelForSequenceClassification.from_pretrained(tmp_path / "rm").eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tokenizer = load_tokenizer(tmp_path / "rm")
    # rlhf's score of rendered (prompt, response) text = plain transformers' on the user's own encoding
    pairs = load_preferences(tmp_path / "pairs.jsonl", tokenizer=tokenizer).pairs[:4]
    ours = score([p.prompt for p in pairs], [p.chosen for p in pairs])
    by_prompt = {(r["prompt"] if kind == "plain" else r["prompt"][0]["content"]): r for r in rows}
    theirs = []
    for p in pairs:
        key = p.prompt if kind == "plain" else next(k for k in by_prompt if k in p.prompt)
        ids = transformers_ids(tokenizer, by_prompt[key], "chosen")
        if tokenizer.bos_token_id is not None and S.special_tokens(tokenizer).adds_bos:
            assert ids.count(tokenizer.bos_token_id) == 1  # exactly one BOS, chat template or not
        with torch.no_grad():
            theirs.append(plain(input_ids=torch.tensor([ids])).logits[0, 0].item())
    torch.testing.assert_close(ours, torch.tensor(theirs), atol=1e-5, rtol=1e-5)


def response_tokens(batch, row: int) -> list[int]:
    return batch.input_ids[row][batch.attention_mask[row].bool()].tolist()


@pytest.mark.parametrize("family,kind", CASES)
def test_dpo_and_ilql_train_on_what_generate_emits(family_dir, tmp_path, family, kind):
    from rlhf.algorithms import dpo, ilql
    from rlhf.data import load_preferences
    from rlhf.data.responses import RewardedResponse
    from rlhf.models import disable_dropout

    model, tokenizer = load(family_dir(family))
    disable_dropout(model)
    model.train()  # dropout stays off in train mode: the loss below is exactly log 2
    write_jsonl(tmp_path / "pairs.jsonl", pairs_for(kind))
    pairs = load_preferences(tmp_path / "pairs.jsonl", tokenizer=tokenizer).pairs[:4]
    cfg = dpo.DPOConfig(batch_size=4)
    for pair in pairs:
        [single] = dpo.make_batches([pair], tokenizer, cfg)  # (a batch's rows are ordered by length)
        row = response_tokens(single, 0)
        prompt = S.encode_prompt(tokenizer, pair.prompt)
        if kind == "chat":  # the prompt is the template's generation prompt, one BOS at most
            food = pair.prompt.split("what is ")[1].split("?")[0]
            messages = [{"role": "user", "content": f"what is {food}?"}]
            assert prompt == tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)  # fmt: skip
        assert row[: len(prompt)] == prompt and row[-1] == tokenizer.eos_token_id
        assert row[len(prompt) :].count(tokenizer.eos_token_id) == 1  # one EOS, at the end
        # the response decodes to exactly the chosen text: no dummy-prefix space, nothing dropped
        assert tokenizer.decode(row[len(prompt) : -1], skip_special_tokens=False).strip() == pair.chosen
        [logged] = ilql.make_batches(
            [RewardedResponse(pair.prompt, pair.chosen, 1.0, "x")], tokenizer, ilql.ILQLConfig()
        )
        assert response_tokens(logged, 0) == row  # ILQL builds the same sequence
    [batch] = dpo.make_batches(pairs, tokenizer, cfg)
    dpo.cache_reference_logps(model, [batch], "cpu")
    loss, stats = dpo.batch_loss(model, batch, "cpu", cfg)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6) and stats["rewards/margin"] == 0.0


@pytest.mark.parametrize("family,kind", CASES)
def test_kto_trains_on_binary_rows_as_dpo_on_their_pairs(family_dir, tmp_path, family, kind):
    """Each pair's chosen side as a thumbs up (its rejected as a thumbs down): KTO's labelled row is DPO's
    chosen row token for token, and at policy = reference its loss is exactly 1/2 (r = z = 0)."""
    from rlhf.algorithms import dpo, kto
    from rlhf.data import load_preferences

    model, tokenizer = load(family_dir(family))
    rows = [{"prompt": r["prompt"], "completion": r[side], "label": side == "chosen"}
            for r in pairs_for(kind)[:4] for side in ("chosen", "rejected")]  # fmt: skip
    write_jsonl(tmp_path / "binary.jsonl", rows)
    write_jsonl(tmp_path / "pairs.jsonl", pairs_for(kind)[:4])
    examples = load_preferences(tmp_path / "binary.jsonl", tokenizer=tokenizer).binary
    pairs = load_preferences(tmp_path / "pairs.jsonl", tokenizer=tokenizer).pairs
    cfg = kto.KTOConfig(batch_size=len(examples))
    for example, pair in zip(examples[::2], pairs, strict=True):
        [single] = kto.make_batches([example, example], tokenizer, cfg)
        [dpo_batch] = dpo.make_batches([pair], tokenizer, dpo.DPOConfig(batch_size=1))
        assert response_tokens(single, 0) == response_tokens(dpo_batch, 0)
    [batch] = kto.make_batches(examples, tokenizer, cfg)
    dpo.cache_reference_logps(model, [batch], "cpu")
    loss, stats = kto.batch_loss(model, batch, "cpu", cfg)
    assert loss.item() == pytest.approx(0.5, abs=1e-6) and stats["kl"] == pytest.approx(0.0, abs=1e-6)


def prompts_for(kind: str) -> list:
    if kind == "plain":
        return [f"Question: what is {w}? Answer:" for w in FOODS[:4]]
    return [[{"role": "user", "content": f"what is {w}?"}] for w in FOODS[:4]]


@pytest.mark.parametrize("family,kind", CASES)
def test_sampling_is_generate_and_kl_to_itself_is_zero(family_dir, family, kind):
    from rlhf.data.readers import render_prompt
    from rlhf.evaluation.kl import sampled_kl
    from rlhf.rollout import SamplingConfig, sample

    model, tokenizer = load(family_dir(family))
    prompts = [p if kind == "plain" else render_prompt(p, tokenizer) for p in prompts_for(kind)]
    samples = sample(model, tokenizer, prompts, SamplingConfig(max_new_tokens=6, temperature=0.0))
    for given, text, ids in zip(prompts_for(kind), prompts, samples.response_ids, strict=True):
        enc = S.encode_prompt(tokenizer, text)
        if kind == "chat":  # what a transformers user feeds generate: one BOS at most
            assert enc == tokenizer.apply_chat_template(given, add_generation_prompt=True, tokenize=True, return_dict=False)  # fmt: skip
        expected = model.generate(torch.tensor([enc]), attention_mask=torch.ones(1, len(enc), dtype=torch.long),
                                  max_new_tokens=6, do_sample=False, eos_token_id=tokenizer.eos_token_id,
                                  pad_token_id=tokenizer.pad_token_id)[0, len(enc):].tolist()  # fmt: skip
        stop = (
            expected.index(tokenizer.eos_token_id) + 1
            if tokenizer.eos_token_id in expected
            else len(expected)
        )
        assert ids == expected[:stop]
    assert sampled_kl(model, model, tokenizer, samples) == pytest.approx([0.0] * len(prompts), abs=1e-6)


@pytest.mark.parametrize(
    "family,advantage", [("gpt2", "gae"), ("llama2", "grpo"), ("qwen2", "gae"), ("neox", "rloo")]
)
def test_ppo_first_iteration_has_zero_kl(family_dir, tmp_path, family, advantage):
    from rlhf.algorithms.ppo import PPOConfig, train

    write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": p} for p in prompts_for("plain")])
    cfg = PPOConfig(policy=str(family_dir(family)), reward="tests.test_sequences:brevity",
                    prompts=str(tmp_path / "prompts.jsonl"), steps=1, batch_size=4, mini_batch_size=4,
                    max_new_tokens=6, advantage=advantage, kl_coef=0.1,
                    **({"samples_per_prompt": 2} if advantage != "gae" else {}))  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = train(cfg, RUN, tmp_path / "policy", show_progress=False)
    first = result.history[0]
    # policy = reference at the first rollout, dropout off (GPT-2 ships with 0.1): KL exactly 0
    assert first["objective/kl"] == pytest.approx(0.0, abs=1e-6) and math.isfinite(first["loss/policy"])
