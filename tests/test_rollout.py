"""The decoding core: token for token what transformers' `generate` samples, with the same seed; the
top-k / top-p filters against transformers' warpers; a prompt encoded once for its K samples."""

import pytest
import torch

from rlhf.rollout import decode, repeated_prompts, sample_next
from tests.conftest import make_model, make_tokenizer

PROMPTS = ["the cat sat on", "a dog", "tell me about the weather today please", "hi"]


@pytest.fixture(scope="module")
def lm():
    tokenizer = make_tokenizer()
    model = make_model(tokenizer).eval()
    tokenizer.padding_side = "left"
    return model, tokenizer


def encode(tokenizer, prompts):
    return tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)


@pytest.mark.parametrize(
    "temperature,top_k,top_p", [(1.0, 0, 1.0), (0.7, 5, 1.0), (1.3, 0, 0.8), (1.0, 20, 0.9), (0.0, 0, 1.0)]
)
@torch.no_grad()
def test_decode_samples_what_generate_samples(lm, temperature, top_k, top_p):
    model, tokenizer = lm
    enc = encode(tokenizer, PROMPTS)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    torch.manual_seed(3)
    greedy = temperature <= 0
    expected = model.generate(
        **enc, max_new_tokens=12, do_sample=not greedy, temperature=None if greedy else temperature,
        top_k=top_k or None, top_p=top_p if top_p < 1 else None, eos_token_id=eos, pad_token_id=pad,
    )[:, enc["input_ids"].shape[1] :]  # fmt: skip
    torch.manual_seed(3)
    choose = lambda logits, _: (sample_next(logits, temperature, top_k, top_p), None)  # noqa: E731
    got, _ = decode(model, enc["input_ids"], enc["attention_mask"], 12, choose, eos, pad)
    assert torch.equal(got, expected)


def test_sample_next_filters_by_hand():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    torch.manual_seed(0)
    top2 = torch.stack([sample_next(logits, 1.0, top_k=2) for _ in range(400)])
    assert set(top2.flatten().tolist()) == {0, 1}
    nucleus = torch.stack([sample_next(logits, 1.0, top_p=0.75) for _ in range(400)])  # 0.5 + 0.3 >= 0.75
    assert set(nucleus.flatten().tolist()) == {0, 1}
    assert sample_next(logits, 0.0).item() == 0
    # temperature: at T = 0.5 the first token's share is 0.25 / (0.25 + 0.09 + 0.0225 + 0.0025) = 0.685
    hot = torch.stack([sample_next(logits, 0.5) for _ in range(4000)]).flatten()
    assert abs((hot == 0).float().mean().item() - 0.685) < 0.03


@torch.no_grad()
def test_repeats_encode_a_prompt_once_and_stop_at_eos(lm):
    model, tokenizer = lm
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    greedy = lambda logits, _: (logits.argmax(-1), None)  # noqa: E731
    once = encode(tokenizer, PROMPTS[:2])
    shared, _ = decode(model, once["input_ids"], once["attention_mask"], 10, greedy, eos, pad, repeats=3)
    rows = encode(tokenizer, [p for p in PROMPTS[:2] for _ in range(3)])
    separate, _ = decode(model, rows["input_ids"], rows["attention_mask"], 10, greedy, eos, pad)
    assert torch.equal(shared, separate) and shared.shape[0] == 6
    # a stop token ends a row: everything after it is padding, and the loop ends when all rows stopped
    stop_at_2 = lambda logits, _: (torch.full((len(logits),), eos), None)  # noqa: E731
    stopped, _ = decode(model, once["input_ids"], once["attention_mask"], 10, stop_at_2, eos, pad)
    assert stopped.shape == (2, 1)
    counter = iter(range(100))

    def eos_on_row0_first(logits, _):
        step = next(counter)
        tokens = torch.full((len(logits),), 7)
        tokens[0] = eos if step == 0 else 7
        return tokens, torch.ones(len(logits))

    tokens, total = decode(model, once["input_ids"], once["attention_mask"], 4, eos_on_row0_first, eos, pad)
    assert tokens[0].tolist() == [eos, pad, pad, pad] and tokens[1].tolist() == [7, 7, 7, 7]
    assert total.tolist() == [1.0, 4.0]  # log-probs summed up to and including each row's stop


def test_repeated_prompts():
    assert repeated_prompts(["a", "a", "b", "b"]) == 2
    assert repeated_prompts(["a", "a", "a", "b", "b", "b"]) == 3
    assert repeated_prompts(["a", "b", "a", "b"]) == 1
    assert repeated_prompts(["a"] * 4) == 4
    assert repeated_prompts(["a", "a", "b"]) == 1
