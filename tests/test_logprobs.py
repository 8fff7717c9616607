"""logprobs: gathering, entropy, EOS truncation by hand; response log-probs against a tiny Llama."""

import math

import pytest
import torch
import torch.nn.functional as F

from rlhf.logprobs import (
    entropy_from_logits,
    first_true_indices,
    gather_logprobs,
    response_logprobs,
    sequence_logprob,
    truncate_after_eos,
)
from tests.conftest import make_model, make_tokenizer


def test_gather_logprobs_by_hand_and_with_temperature():
    # logits (0, log 3): p = (1/4, 3/4) -> log p = (log 0.25, log 0.75) = (-1.386294, -0.287682)
    logits = torch.tensor([[[0.0, math.log(3.0)], [0.0, math.log(3.0)]]], dtype=torch.float64)  # (1, 2, 2)
    tokens = torch.tensor([[0, 1]])
    torch.testing.assert_close(
        gather_logprobs(logits, tokens), torch.tensor([[math.log(0.25), math.log(0.75)]]).double()
    )
    # temperature 2: logits (0, log(3)/2) -> p_1 = sqrt(3) / (1 + sqrt(3)) = 1.732051 / 2.732051 = 0.633975
    hot = gather_logprobs(logits, tokens, temperature=2.0)
    assert hot[0, 1].item() == pytest.approx(math.log(0.633975), abs=1e-6)
    with pytest.raises(ValueError):
        gather_logprobs(logits, tokens, temperature=0.0)


def test_gather_logprobs_matches_log_softmax():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 11, generator=gen) * 4  # (B, T, V)
    tokens = torch.randint(0, 11, (2, 5), generator=gen)
    for temp in (1.0, 0.7):
        expected = F.log_softmax(logits / temp, dim=-1).gather(-1, tokens[..., None]).squeeze(-1)
        torch.testing.assert_close(gather_logprobs(logits, tokens, temp), expected)
    # bf16 logits are upcast (row by row) and give float32 log-probs of the bf16 values
    low = logits.bfloat16()
    expected = F.log_softmax(low.float(), dim=-1).gather(-1, tokens[..., None]).squeeze(-1)
    out = gather_logprobs(low, tokens)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, expected)


def test_entropy_from_logits():
    # uniform over V = 7: H = log 7 = 1.945910; two equal logits and one -inf (filtered): log 2
    assert entropy_from_logits(torch.zeros(2, 3, 7)).allclose(torch.full((2, 3), math.log(7.0)))
    filtered = torch.tensor([[[0.0, 0.0, -math.inf]]])
    assert entropy_from_logits(filtered).item() == pytest.approx(math.log(2.0))
    # against -sum p log p on random logits
    logits = torch.randn(2, 3, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    logp = F.log_softmax(logits, dim=-1)
    torch.testing.assert_close(entropy_from_logits(logits), -(logp.exp() * logp).sum(-1))


def test_first_true_indices_and_truncate_after_eos_by_hand():
    bools = torch.tensor([[False, True, True], [False, False, False], [True, False, False]])
    assert first_true_indices(bools).tolist() == [1, 3, 0]  # no True -> T = 3
    # eos = 2, pad = 0: everything after the first EOS becomes pad; the mask keeps the EOS itself
    tokens = torch.tensor([[5, 2, 7, 2], [5, 6, 7, 8], [2, 9, 9, 9]])
    out, mask = truncate_after_eos(tokens, eos_id=2, pad_id=0)
    assert out.tolist() == [[5, 2, 0, 0], [5, 6, 7, 8], [2, 0, 0, 0]]
    assert mask.int().tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]
    out, _ = truncate_after_eos(tokens, eos_id=2)  # pad defaults to eos
    assert out.tolist()[0] == [5, 2, 2, 2]


def test_sequence_logprob_by_hand():
    # (-1) + (-2) = -3; the padded -inf is not added
    logprobs = torch.tensor([[-1.0, -2.0, -math.inf], [-0.5, -0.5, -0.5]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert sequence_logprob(logprobs, mask).tolist() == [-3.0, -1.5]


@pytest.fixture(scope="module")
def tiny_lm():
    tokenizer = make_tokenizer()
    return make_model(tokenizer).eval(), tokenizer.pad_token_id


def test_response_logprobs_shift_matches_the_model(tiny_lm):
    # one unpadded row: the log-prob of token t is log_softmax(logits at t - 1)[token t]
    model, _ = tiny_lm
    ids = torch.tensor([[5, 17, 42, 8, 99, 23, 61]])  # prompt of 4, response of 3
    with torch.no_grad():
        logprobs, logits = response_logprobs(model, ids, torch.ones_like(ids), 4, return_logits=True)
        full = F.log_softmax(model(ids).logits[0], dim=-1)  # (L, V)
    expected = torch.stack([full[3, 99], full[4, 23], full[5, 61]])
    torch.testing.assert_close(logprobs[0], expected)
    assert logprobs.shape == (1, 3) and logits.shape == (1, 3, model.config.vocab_size)
    # temperature 2: returned logits are halved, log-probs taken from them
    with torch.no_grad():
        hot, hot_logits = response_logprobs(
            model, ids, torch.ones_like(ids), 4, temperature=2.0, return_logits=True
        )
    torch.testing.assert_close(hot_logits, logits / 2)
    torch.testing.assert_close(hot, gather_logprobs(logits, ids[:, 4:], temperature=2.0))


def left_padded_batch(pad):
    """Prompts of 5 and 3 tokens left-padded to 5, then responses of 4 tokens from column 5."""
    prompts = [[11, 12, 13, 14, 15], [21, 22, 23]]
    responses = [[31, 32, 33, 34], [41, 42, 43, 44]]
    input_ids = torch.tensor([[pad] * (5 - len(p)) + p + r for p, r in zip(prompts, responses, strict=True)])
    attention_mask = torch.tensor([[0] * (5 - len(p)) + [1] * (len(p) + 4) for p in prompts])
    return prompts, responses, input_ids, attention_mask


def assert_rows_equal_unpadded(model, pad):
    prompts, responses, input_ids, attention_mask = left_padded_batch(pad)
    batched, _ = response_logprobs(model, input_ids, attention_mask, 5)
    for i, (p, r) in enumerate(zip(prompts, responses, strict=True)):
        single = torch.tensor([p + r])
        alone, _ = response_logprobs(model, single, torch.ones_like(single), len(p))
        torch.testing.assert_close(batched[i], alone[0], atol=1e-5, rtol=0)
    return batched, input_ids, attention_mask


@torch.no_grad()
def test_response_logprobs_left_padding_equals_unpadded(tiny_lm):
    model, pad = tiny_lm
    batched, input_ids, attention_mask = assert_rows_equal_unpadded(model, pad)
    # the comparison can fail: attending to the padding changes the padded row
    unmasked = gather_logprobs(model(input_ids=input_ids).logits[:, 4:-1], input_ids[:, 5:])
    assert not torch.allclose(unmasked[1], batched[1], atol=1e-3)


@torch.no_grad()
def test_position_ids_matter_for_absolute_positions():
    # Llama's RoPE sees only relative positions, so a row shifted by its padding gives the same scores
    # with or without position ids. GPT-2 adds learned absolute position embeddings: there the default
    # positions 0..L-1 put a left-padded prompt at 2, 3, ... and its log-probs move.
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=300, n_positions=64, n_embd=32, n_layer=2, n_head=2, bos_token_id=0, eos_token_id=0
    )
    model = GPT2LMHeadModel(config).eval()
    batched, input_ids, attention_mask = assert_rows_equal_unpadded(model, pad=1)
    default_positions = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, 4:-1]
    naive = gather_logprobs(default_positions, input_ids[:, 5:])
    assert not torch.allclose(naive[1], batched[1], atol=1e-3)
    torch.testing.assert_close(naive[0], batched[0])  # the unpadded row is the same either way
