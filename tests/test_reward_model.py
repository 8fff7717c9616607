"""The reward model: plain transformers gives our scores; ensembles give mean and std; normalisation."""

from __future__ import annotations

import json

import pytest
import torch

from rlhf.errors import UserError
from rlhf.reward_model import (
    REWARD_CONFIG,
    apply_normalization,
    init_reward_model,
    load_reward_model,
    normalization_stats,
    save_reward_model,
    score_texts,
)

TEXTS = [
    "User: what is tea?\nAssistant: Tea is a drink.",
    "User: hi\nAssistant: Hello there, friend!",
    "short",
]


@pytest.fixture(scope="module")
def saved_rm(tiny_lm_dir, tmp_path_factory):
    model, tokenizer = init_reward_model(tiny_lm_dir, ["helpful", "harmless"], ensemble_size=3, seed=0)
    with torch.no_grad():
        for p in model.seq_model.base_model.parameters():
            p.add_(0.01 * torch.randn_like(p))  # not the initial weights: make sure they are saved
    out = save_reward_model(tmp_path_factory.mktemp("rm") / "rm", model, tokenizer)
    return model, tokenizer, out


def test_plain_transformers_gives_the_ensemble_mean(saved_rm):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model, _, out = saved_rm
    plain = AutoModelForSequenceClassification.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert plain.config.num_labels == 2
    assert plain.config.id2label == {0: "helpful", 1: "harmless"}
    assert plain.config.pad_token_id == tokenizer.pad_token_id
    ours = score_texts(model, tokenizer, TEXTS)
    for i, text in enumerate(TEXTS):
        with torch.no_grad():
            logits = plain(**tokenizer(text, return_tensors="pt")).logits[0]
        torch.testing.assert_close(logits, ours.mean[i], atol=1e-5, rtol=1e-5)


def test_batched_padded_scores_equal_single_scores(saved_rm):
    model, tokenizer, _ = saved_rm
    batched = score_texts(model, tokenizer, TEXTS, batch_size=3).mean
    single = torch.cat([score_texts(model, tokenizer, [t]).mean for t in TEXTS])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-5)


def test_round_trip_restores_heads_and_meta(saved_rm):
    model, tokenizer, out = saved_rm
    loaded, _ = load_reward_model(out)
    assert loaded.objectives == ["helpful", "harmless"] and loaded.meta.ensemble_size == 3
    a, b = score_texts(model, tokenizer, TEXTS), score_texts(loaded, tokenizer, TEXTS)
    torch.testing.assert_close(a.mean, b.mean)
    torch.testing.assert_close(a.std, b.std)
    assert (b.std > 0).all()  # three different heads disagree


def test_ensemble_std_by_hand(tiny_lm_dir):
    model, tokenizer = init_reward_model(tiny_lm_dir, ["r"], ensemble_size=2, seed=0)
    with torch.no_grad():
        h = model.last_hidden(*_encode(tokenizer, TEXTS[:1]))[0]
        model.heads.zero_()
        model.heads[0, 0] = h / h.dot(h)  # member 0 scores exactly 1
        model.heads[1, 0] = 3 * h / h.dot(h)  # member 1 scores exactly 3
    scores = score_texts(model, tokenizer, TEXTS[:1])
    assert scores.mean.item() == pytest.approx(2.0, abs=1e-4)  # (1 + 3) / 2
    assert scores.std.item() == pytest.approx(1.0, abs=1e-4)  # population std of {1, 3}


def _encode(tokenizer, texts):
    enc = tokenizer(texts, return_tensors="pt", padding=True)
    return enc["input_ids"], enc["attention_mask"]


def test_normalisation():
    scores = torch.tensor([[1.0, 10.0], [3.0, 14.0]])
    mean, std = normalization_stats(scores)
    assert mean == [2.0, 12.0] and std == [1.0, 2.0]
    from rlhf.reward_model import RewardMeta

    meta = RewardMeta(objectives=["a", "b"], norm_mean=mean, norm_std=std)
    normed, normed_std = apply_normalization(meta, scores, torch.ones(2, 2))
    torch.testing.assert_close(normed, torch.tensor([[-1.0, -1.0], [1.0, 1.0]]))
    torch.testing.assert_close(normed_std, torch.tensor([[1.0, 0.5], [1.0, 0.5]]))
    with pytest.raises(UserError, match="no normalisation statistics"):
        apply_normalization(RewardMeta(), scores, scores)


def test_loading_a_causal_lm_as_reward_model_is_a_clear_error(tiny_lm_dir):
    with pytest.raises(UserError, match="not an rlhf reward model directory"):
        load_reward_model(tiny_lm_dir)


def test_reward_config_json_is_readable(saved_rm):
    _, _, out = saved_rm
    meta = json.loads((out / REWARD_CONFIG).read_text())
    assert meta["objectives"] == ["helpful", "harmless"] and meta["ensemble_kind"] == "heads"


def test_a_reward_model_can_be_the_backbone_of_another(tiny_lm_dir, tmp_path):
    """Preference-model pretraining then fine-tuning: a one-head reward model starts a two-head one."""
    from rlhf.reward_model import init_reward_model, save_reward_model

    first, tokenizer = init_reward_model(tiny_lm_dir, ["reward"], 1, seed=0)
    save_reward_model(tmp_path / "pmp", first, tokenizer)
    second, _ = init_reward_model(tmp_path / "pmp", ["helpful", "harmless"], 2, seed=1)
    assert second.meta.objectives == ["helpful", "harmless"] and second.heads.shape[:2] == (2, 2)
    body = dict(second.seq_model.base_model.named_parameters())
    for name, param in first.seq_model.base_model.named_parameters():
        torch.testing.assert_close(body[name], param)  # the backbone carries over, the heads are new
