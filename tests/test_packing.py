"""Packed (padding-free) forwards: the layout by hand, and the same log-probs, values, logits and
gradients as the padded forward on Llama (grouped-query attention too) and GPT-2."""

import pytest
import torch

import rlhf.logprobs as logprobs_module
from rlhf.logprobs import _packed_response_logprobs, _padded_response_logprobs, response_logprobs
from rlhf.packing import contiguous_rows, pack, supports_packing


def test_pack_by_hand():
    ids = torch.tensor([[9, 5, 6, 7, 9], [1, 2, 9, 9, 9]])
    mask = torch.tensor([[0, 1, 1, 1, 0], [1, 1, 0, 0, 0]])
    packed = pack(ids, mask)
    assert packed.input_ids.tolist() == [[5, 6, 7, 1, 2]]
    assert packed.position_ids.tolist() == [[0, 1, 2, 0, 1]]
    assert packed.cu_seq_lens.tolist() == [0, 3, 5]
    assert packed.max_length == 3
    assert packed.flat_index.tolist() == [[-1, 0, 1, 2, -1], [3, 4, -1, -1, -1]]


def test_contiguous_rows():
    assert contiguous_rows(torch.tensor([[0, 1, 1, 0], [1, 1, 1, 1]]))
    assert not contiguous_rows(torch.tensor([[1, 0, 1, 0]]))  # a hole inside the row
    assert not contiguous_rows(torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0]]))  # an empty row


def ppo_like_batch(vocab: int, seed: int = 0, rows: int = 6, prompt: int = 9, response: int = 7):
    """Left-padded prompts of 2..prompt tokens, responses of 1..response tokens right-padded after EOS."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (rows, prompt + response), generator=g)
    prompt_len = torch.randint(2, prompt + 1, (rows,), generator=g)
    response_len = torch.randint(1, response + 1, (rows,), generator=g)
    column = torch.arange(prompt + response)
    mask = (column >= prompt - prompt_len[:, None]) & (column < prompt + response_len[:, None])
    return torch.where(mask, ids, 0), mask.long(), prompt


def llama(num_key_value_heads: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=num_key_value_heads, max_position_embeddings=64,
    )  # fmt: skip
    return LlamaForCausalLM(config)


def gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=97, n_positions=64, n_embd=32, n_layer=2, n_head=2)
    return GPT2LMHeadModel(config)


def forward_and_grads(fn, model, head, ids, mask, start):
    model.zero_grad(set_to_none=True)
    head.zero_grad(set_to_none=True)
    logprobs, logits, values = fn(model, ids, mask, start, 0.7, True, head)
    valid = mask[:, start:].bool()
    (logprobs[valid].sum() + values[valid].pow(2).sum() + logits[valid].logsumexp(-1).sum()).backward()
    grads = [p.grad.clone() for p in [*model.parameters(), *head.parameters()] if p.grad is not None]
    return logprobs[valid], logits[valid], values[valid], grads


@pytest.mark.parametrize(
    "make", [lambda: llama(4), lambda: llama(2), gpt2], ids=["llama", "llama-gqa", "gpt2"]
)
def test_packed_equals_padded_with_gradients(make):
    model = make().train()
    for module in model.modules():  # dropout off, as PPO runs the policy
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    head = torch.nn.Linear(32, 1)
    ids, mask, start = ppo_like_batch(97)
    assert supports_packing(model)
    padded = forward_and_grads(_padded_response_logprobs, model, head, ids, mask, start)
    packed = forward_and_grads(_packed_response_logprobs, model, head, ids, mask, start)
    for a, b in zip(padded[:3], packed[:3], strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert len(padded[3]) == len(packed[3])
    for a, b in zip(padded[3], packed[3], strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    # and the comparison can fail: one row's positions shifted by one change its log-probs
    shifted = ids.clone()
    shifted[0, start] = (shifted[0, start] + 1) % 97
    moved = _packed_response_logprobs(model, shifted, mask, start, 0.7, False, None)[0]
    assert not torch.allclose(moved[mask[:, start:].bool()], packed[0].detach(), atol=1e-4)


@torch.no_grad()
def test_response_logprobs_packs_only_where_padding_is_worth_it(monkeypatch):
    model = llama(4).eval()
    calls = []
    real = logprobs_module._packed_response_logprobs
    monkeypatch.setattr(logprobs_module, "_packed_response_logprobs", lambda *a: calls.append(1) or real(*a))
    ids, mask, start = ppo_like_batch(97)
    response_logprobs(model, ids, mask, start)
    assert calls and model._rlhf_packing is True  # checked once against the padded forward
    calls.clear()
    full = torch.ones_like(mask)
    response_logprobs(model, ids, full, start)  # no padding: the padded forward
    assert not calls


@torch.no_grad()
def test_a_packed_forward_that_differs_falls_back_for_good(monkeypatch):
    model = llama(4).eval()
    real = logprobs_module._packed_response_logprobs
    monkeypatch.setattr(logprobs_module, "_packed_response_logprobs", lambda *a: (real(*a)[0] + 1.0, None))
    ids, mask, start = ppo_like_batch(97)
    got, _ = response_logprobs(model, ids, mask, start)
    expected, _ = _padded_response_logprobs(model, ids, mask, start, 1.0, False, None)
    valid = mask[:, start:].bool()
    torch.testing.assert_close(got[valid], expected[valid])
    assert model._rlhf_packing is False and not supports_packing(model)


@torch.no_grad()
def test_a_packed_row_ending_in_eos_gives_no_attention_mask_warning():
    """GPT-2 style: pad = EOS, and a packed row ends with a response's EOS. transformers then warned
    "We strongly recommend passing in an `attention_mask`" in every PPO run, about padding there is none of."""
    import logging

    model = gpt2().eval()
    model.config.pad_token_id = model.config.eos_token_id = 0
    ids, mask, start = ppo_like_batch(97)
    ids[-1, int(mask[-1].nonzero().max())] = (
        0  # the last row ends in EOS (= pad): the packed row's last token
    )
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    transformers_logger = logging.getLogger("transformers.modeling_utils")
    transformers_logger.addHandler(handler)
    logging.Logger.warning_once.cache_clear()  # transformers' once-per-process cache
    try:
        _packed_response_logprobs(model, ids, mask, start, 1.0, False, None)
        assert not [r for r in records if "attention_mask" in r.getMessage()]
        model(input_ids=ids[-1:, -3:])  # the same check, outside a packed forward, still warns
        assert [r for r in records if "attention_mask" in r.getMessage()]
    finally:
        transformers_logger.removeHandler(handler)


def grouped_batch(vocab: int, seed: int = 0, groups: int = 3, k: int = 3, prompt: int = 9, response: int = 7):
    """K samples of each prompt, as a rollout lays them out: rows of a group share their left-padded
    prompt, responses of 1..response tokens differ."""
    ids, mask, start = ppo_like_batch(vocab, seed, groups * k, prompt, response)
    first = torch.arange(groups).repeat_interleave(k) * k  # (B,) the group's first row
    ids[:, :start], mask[:, :start] = ids[first, :start], mask[first, :start]
    return ids, mask, start


def order_of(valid: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Indices into valid-flattened values that list them in the row order `order`."""
    index = torch.full(valid.shape, -1)
    index[valid] = torch.arange(int(valid.sum()))
    return index[order][valid[order]]


def test_pack_shared_prompts_by_hand():
    from rlhf.packing import pack_shared_prompts, packed_tokens, prompt_groups

    # rows 0 and 1 share the prompt [5, 6] (left-padded), row 2 has its own [1, 2, 3]
    ids = torch.tensor([[0, 5, 6, 7, 0], [0, 5, 6, 8, 4], [1, 2, 3, 9, 0]])
    mask = torch.tensor([[0, 1, 1, 1, 0], [0, 1, 1, 1, 1], [1, 1, 1, 1, 0]])
    rows = prompt_groups(ids, mask, 3)
    assert sorted(rows) == [[0, 1], [2]]
    rows = [[0, 1], [2]]
    packed, groups = pack_shared_prompts(ids, mask, 3, rows)
    assert groups == [(2, [1, 2]), (3, [1])]
    assert packed.input_ids.tolist() == [[5, 6, 7, 8, 4, 1, 2, 3, 9]]
    assert packed.position_ids.tolist() == [[0, 1, 2, 2, 3, 0, 1, 2, 3]]  # responses follow the prompt
    assert packed.cu_seq_lens.tolist() == [0, 2, 3, 5, 8, 9]
    assert packed.flat_index.tolist() == [[-1, 0, 1, 2, -1], [-1, 0, 1, 3, 4], [5, 6, 7, 8, -1]]
    # 11 real tokens, less the second copy of the 2-token prompt: the 9 of the packed row
    assert packed_tokens(mask, 3, rows) == 9 == packed.input_ids.shape[1]


@pytest.mark.parametrize(
    "make", [lambda: llama(4), lambda: llama(2), gpt2], ids=["llama", "llama-gqa", "gpt2"]
)
def test_shared_prompts_equal_padded_with_gradients(make):
    """Each prompt once for its K samples: the padded forward's log-probs, logits, values and gradients."""
    model = make().train()
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    head = torch.nn.Linear(32, 1)
    ids, mask, start = grouped_batch(97)
    from rlhf.packing import prompt_groups

    assert sorted(prompt_groups(ids, mask, start)) == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    padded = forward_and_grads(_padded_response_logprobs, model, head, ids, mask, start)
    shared = forward_and_grads(_packed_response_logprobs, model, head, ids, mask, start)
    for a, b in zip(padded[:3], shared[:3], strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    for a, b in zip(padded[3], shared[3], strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    valid = mask[:, start:].bool()
    # the rows shuffled, as the update's later epochs take them: groups found all the same
    order = torch.randperm(len(ids), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        shuffled = _packed_response_logprobs(model, ids[order], mask[order], start, 0.7, False, None)[0]
    assert len(prompt_groups(ids[order], mask[order], start)) == 3
    torch.testing.assert_close(
        shuffled[valid[order]], padded[0][order_of(valid, order)], atol=1e-5, rtol=1e-5
    )
    # row 1's prompt changed: a group of its own; row 1's log-probs move, rows 0 and 2 keep theirs
    valid = mask[:, start:].bool()
    with torch.no_grad():
        before = _packed_response_logprobs(model, ids, mask, start, 0.7, False, None)[0]
        cut = ids.clone()
        cut[1, start - 1] = (cut[1, start - 1] + 1) % 97
        after = _packed_response_logprobs(model, cut, mask, start, 0.7, False, None)[0]
    assert sorted(prompt_groups(cut, mask, start)) == [[0, 2], [1], [3, 4, 5], [6, 7, 8]]
    assert not torch.allclose(after[1][valid[1]], before[1][valid[1]], atol=1e-4)
    for row in (0, 2):
        torch.testing.assert_close(after[row][valid[row]], before[row][valid[row]], atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- reward models


def test_pack_token_groups_by_hand():
    from rlhf.packing import pack_token_groups

    rows = [[1, 2, 3, 4], [7, 8], [1, 2, 5]]
    packed, layout = pack_token_groups(rows, [[0, 2], [1]])
    # group [0, 2]: common prefix [1, 2] (at most the shorter row less one: 2), then [3, 4] and [5];
    # group [1] alone: its row split after its last-but-one token, [7] then [8]
    assert packed.input_ids.tolist() == [[1, 2, 3, 4, 5, 7, 8]]
    assert packed.position_ids.tolist() == [[0, 1, 2, 3, 2, 0, 1]]
    assert packed.cu_seq_lens.tolist() == [0, 2, 4, 5, 6, 7]
    assert layout == [(2, [2, 1]), (1, [1])]
    assert packed.flat_index.tolist() == [[0, 1, 2, 3], [5, 6, -1, -1], [0, 1, 4, -1]]
    # rows that differ from the first token share nothing: an empty prefix, each row whole
    packed, layout = pack_token_groups([[1, 2], [3, 4, 5]], [[0, 1]])
    assert layout == [(0, [2, 3])] and packed.position_ids.tolist() == [[0, 1, 0, 1, 2]]


def reward_model(family: str, ensemble: str = "heads"):
    from transformers import (
        GPT2Config,
        GPT2ForSequenceClassification,
        LlamaConfig,
        LlamaForSequenceClassification,
    )

    from rlhf.reward_model import RewardMeta, RewardModel, RewardModelEnsemble

    heads = 3 if ensemble == "heads" else 1  # N heads on one backbone, or one head on each of 2

    def member(seed: int) -> RewardModel:
        torch.manual_seed(seed)
        if family == "gpt2":
            config = GPT2Config(vocab_size=97, n_positions=64, n_embd=32, n_layer=2, n_head=2, num_labels=2,
                                pad_token_id=0)  # fmt: skip
            seq = GPT2ForSequenceClassification(config)
        else:
            config = LlamaConfig(
                vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=64, num_labels=2, pad_token_id=0,
            )  # fmt: skip
            seq = LlamaForSequenceClassification(config)
        meta = RewardMeta(objectives=["a", "b"], ensemble_size=heads)
        return RewardModel(seq, torch.randn(heads, 2, 32) / 32**0.5, meta).eval()

    if ensemble == "heads":
        return member(0)
    meta = RewardMeta(objectives=["a", "b"], ensemble_size=2, ensemble_kind="models")
    return RewardModelEnsemble([member(0), member(1)], meta).eval()


def scored_rows(seed: int = 0):
    """5 prompts x 3 responses as token rows, shuffled: prompts of 3..12 tokens, responses of 1..8 (one
    ending in pad tokens, scored before them; one whose first token merged into its prompt's last, as a
    tokenizer may), and one prompt cut from the left in one of its rows only."""
    g = torch.Generator().manual_seed(seed)
    rows, prompt_of = [], []
    for p in range(5):
        prompt = torch.randint(3, 97, (int(torch.randint(3, 13, (1,), generator=g)),), generator=g).tolist()
        for _ in range(3):
            response = torch.randint(
                1, 97, (int(torch.randint(1, 9, (1,), generator=g)),), generator=g
            ).tolist()
            rows.append(prompt + response)
            prompt_of.append(p)
    rows[1] = rows[1][:-1] + [5, 0, 0]  # ends in the pad id: scored at the 5
    rows[4][len(rows[4]) - len(rows[4]) // 2 - 1] = 96  # a token inside the prompt differs
    rows[7] = rows[7][2:]  # cut from the left
    order = torch.randperm(len(rows), generator=g).tolist()
    rows = [rows[i] for i in order]
    groups: dict[int, list[int]] = {}
    for i, b in enumerate(order):
        groups.setdefault(prompt_of[b], []).append(i)
    return rows, list(groups.values())


@torch.no_grad()
@pytest.mark.parametrize("family,ensemble", [("llama", "heads"), ("gpt2", "heads"), ("llama", "models")])
def test_reward_scores_with_shared_prompts_equal_padded(family, ensemble):
    from rlhf.packing import pack_token_groups
    from rlhf.reward_model import _packed_member_scores, _padded_member_scores, pad_right
    from rlhf.sequences import score_positions

    model = reward_model(family, ensemble)
    rows, groups = scored_rows()
    assert all(len(group) == 3 for group in groups) and groups[0] != [0, 1, 2]  # shuffled
    padded = _padded_member_scores(model, rows, 0, "cpu", 64)  # (15, N, 2)
    for batch_size in (64, 4):  # all groups in one forward; one group a forward
        packed = _packed_member_scores(model, rows, 0, "cpu", batch_size, groups)
        assert (packed - padded).abs().max() <= 1e-5
    assert padded.std() > 0.05  # scores that differ from row to row, so the comparison can fail
    # groups that are not one prompt's rows share only their common tokens: still the same scores
    mixed = [[b for group in groups for b in group][i : i + 4] for i in range(0, len(rows), 4)]
    assert (_packed_member_scores(model, rows, 0, "cpu", 64, mixed) - padded).abs().max() <= 1e-5
    # and the comparison fails when the responses do not attend to their prompt (no layout)
    packed, layout = pack_token_groups(rows, groups)
    index = packed.flat_index[torch.arange(len(rows)), score_positions(pad_right(rows, 0)[0], 0)]
    assert (model(None, None, packed=packed, layout=layout, index=index) - padded).abs().max() <= 1e-5
    wrong = model(None, None, packed=packed, layout=None, index=index)
    assert (wrong - padded).abs().max() > 1e-2


@torch.no_grad()
def test_a_reward_source_scores_repeated_prompts_as_one_by_one(tiny_lm_dir, tmp_path):
    """`load_reward_source` groups the rows by prompt: the same scores as scoring each (prompt, response)
    alone, for the reward and for a cost on another head, and a plain list without repeats still works."""
    from rlhf.reward_model import init_reward_model, save_reward_model
    from rlhf.rewards import load_reward_source

    model, tokenizer = init_reward_model(tiny_lm_dir, ["helpful", "harmless"], 2, seed=0)
    save_reward_model(tmp_path / "rm", model, tokenizer)
    prompts = ["User: what is tea?\nAssistant:", "User: I feel tired today.\nAssistant:"]
    responses = [
        " Tea is a drink.",
        " Rest.",
        " Mix flour and water, knead.",
        " Drink some water",
        " leaves",
        " a",
    ]
    pairs = [(prompts[i % 2], r) for i, r in enumerate(responses)][::-1]  # interleaved, not grouped
    for weights, setting in (({"helpful": 1.0}, "reward weights"), ({"harmless": -1.0}, "ppo.cost_weights")):
        score = load_reward_source(str(tmp_path / "rm"), weights, device="cpu", setting=setting)
        together = score([p for p, _ in pairs], [r for _, r in pairs])
        alone = torch.cat([score([p], [r]) for p, r in pairs])
        assert score.model._rlhf_packing is True  # packed, and checked once against the padded forward
        assert (together - alone).abs().max() <= 1e-5 and alone.std() > 1e-3
