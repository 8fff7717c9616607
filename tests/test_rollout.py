"""The decoding core: greedy decoding token for token as `generate`; the temperature, top-k and top-p
filters against transformers' warpers; sampled tokens against the model's distribution; a prompt
encoded once for its K samples."""

import pytest
import torch

from rlhf.rollout import decode, filtered_scores, repeated_prompts, sample_next
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


@torch.no_grad()
def test_greedy_decode_is_greedy_generate(lm):
    model, tokenizer = lm
    enc = encode(tokenizer, PROMPTS)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    expected = model.generate(**enc, max_new_tokens=12, do_sample=False, eos_token_id=eos, pad_token_id=pad)
    choose = lambda logits, _: (sample_next(logits, 0.0), None)  # noqa: E731
    got, _ = decode(model, enc["input_ids"], enc["attention_mask"], 12, choose, eos, pad)
    assert torch.equal(got, expected[:, enc["input_ids"].shape[1] :])


@pytest.mark.parametrize(
    "temperature,top_k,top_p", [(1.0, 0, 1.0), (0.7, 5, 1.0), (1.3, 0, 0.8), (1.0, 20, 0.9)]
)
def test_filters_are_transformers_warpers(temperature, top_k, top_p):
    from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    logits = torch.randn(6, 50, generator=torch.Generator().manual_seed(1)) * 3
    expected = TemperatureLogitsWarper(temperature)(None, logits.clone())
    if top_k:
        expected = TopKLogitsWarper(top_k)(None, expected)
    if top_p < 1:
        expected = TopPLogitsWarper(top_p)(None, expected)
    torch.testing.assert_close(filtered_scores(logits, temperature, top_k, top_p), expected)


@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, 0, 1.0), (0.7, 3, 1.0), (1.3, 0, 0.8)])
@torch.no_grad()
def test_decode_samples_the_models_distribution(lm, temperature, top_k, top_p):
    # 40,000 first tokens of one prompt against the model's filtered next-token distribution; the random
    # model's head is scaled so the distribution is not near-uniform (total variation by chance: about 0.02)
    import copy

    model, tokenizer = lm
    model = copy.deepcopy(model)
    model.lm_head.weight.mul_(12.0)
    enc = encode(tokenizer, PROMPTS[:1])
    logits = model(**enc).logits[:, -1]
    expected = filtered_scores(logits, temperature, top_k, top_p).softmax(-1)[0]  # (V,)
    torch.manual_seed(0)
    choose = lambda logits, _: (sample_next(logits, temperature, top_k, top_p), None)  # noqa: E731
    tokens, _ = decode(model, enc["input_ids"], enc["attention_mask"], 1, choose, -1, 0, repeats=40_000)
    empirical = torch.bincount(tokens[:, 0], minlength=len(expected)).float() / 40_000
    assert (empirical[expected == 0] == 0).all()  # filtered tokens are never drawn
    assert 0.5 * (empirical - expected).abs().sum() < 0.05, 0.5 * (empirical - expected).abs().sum()
    if (temperature, top_k, top_p) != (1.0, 0, 1.0):  # the filters visibly change the distribution
        assert 0.5 * (empirical - logits.softmax(-1)[0]).abs().sum() > 0.08


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
