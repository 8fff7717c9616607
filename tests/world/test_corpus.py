"""The toy world's text generator: determinism, the documented mix, prompt format, request parsing."""

import re

import numpy as np
import pytest

from rlhf.world import corpus as c


def test_same_seed_same_corpus_other_seed_other_corpus():
    assert c.generate_corpus(200, seed=7) == c.generate_corpus(200, seed=7)
    assert c.generate_corpus(200, seed=7) != c.generate_corpus(200, seed=8)
    assert c.sample_prompts(50, 3) == c.sample_prompts(50, 3)
    assert c.sample_pairs(50, 3) == c.sample_pairs(50, 3)


def test_corpus_stats_match_the_default_mix():
    # n = 20,000: the standard error of a share p is sqrt(p(1-p)/n) <= 0.0035, so 0.015 is > 4 SE.
    stats = c.corpus_stats(c.generate_corpus(20_000, seed=0))
    assert stats["n"] == 20_000
    for kind, p in c.DEFAULT_REQUEST_MIX.items():
        assert stats[f"request/{kind}"] == pytest.approx(p, abs=0.015)
    # overall share of a response kind = P(request group) * P(kind | group):
    # helpful 0.8 * 0.4 = 0.32, partly 0.8 * 0.25 = 0.20, off_topic 0.12, rude 0.16; harmful 0.2 * 0.35 = 0.07
    expected = {
        "helpful": 0.32,
        "partly_helpful": 0.20,
        "off_topic": 0.12,
        "rude": 0.16,
        "harmful": 0.07,
        "refusal": 0.07,
        "constructive": 0.06,
    }
    for kind, p in expected.items():
        assert stats[f"response/{kind}"] == pytest.approx(p, abs=0.015)


def test_custom_mixes_are_respected():
    only_risky = c.generate_corpus(
        300, 1, request_mix={"risky": 1.0}, response_mix={"risky": {"refusal": 1.0}}
    )
    assert {d.request.kind for d in only_risky} == {"risky"}
    assert {d.response_kind for d in only_risky} == {"refusal"}


def test_response_kinds_fit_their_request_kinds():
    for d in c.generate_corpus(2000, 2):
        assert d.response_kind in c.RESPONSE_KINDS[d.request.kind]
    req = c.Request("risky", "wifi", "How can I hack into my neighbour's wifi?")
    with pytest.raises(ValueError):
        c.write_response(req, "helpful", np.random.default_rng(0))


def test_responses_are_short_and_the_vocabulary_modest():
    dialogues = c.generate_corpus(5000, 3)
    words = [len(d.response.split()) for d in dialogues]
    assert min(words) >= 4 and max(words) <= 45
    assert 8 <= np.median(words) <= 30
    vocab = {w.lower() for d in dialogues for w in re.findall(r"[A-Za-z0-9']+", d.prompt + " " + d.response)}
    assert 300 <= len(vocab) <= 1500
    # normal casing and punctuation, no leading space (the LM text adds it after "Assistant:")
    assert all(d.response[0].isupper() and d.response[-1] in ".?!" for d in dialogues)


def test_prompt_format_round_trip():
    prompt = c.format_prompt("How do I make a cup of tea?")
    assert prompt == "User: How do I make a cup of tea?\nAssistant:"
    assert c.split_prompt(prompt) == "How do I make a cup of tea?"
    assert c.split_prompt("How do I make a cup of tea?") == "How do I make a cup of tea?"
    d = c.generate_corpus(1, 0)[0]
    assert d.prompt == c.format_prompt(d.request.text)


def test_parse_request_recovers_every_request():
    requests = c.all_requests()
    assert len(requests) == len({r.text for r in requests})  # no text is ambiguous
    for r in requests:
        assert c.parse_request(r.text) == r
        assert c.parse_request(c.format_prompt(r.text)) == r
    near = c.parse_request("how do i make a cup of tea please")  # one extra word: Jaccard 7/8
    assert (near.kind, near.topic) == ("task", "tea")
    assert c.parse_request("What is the capital of France?") is None
    assert c.parse_request("") is None


def test_sample_pairs_are_two_different_answers_to_one_request():
    for prompt, a, b in c.sample_pairs(300, 5):
        assert a != b
        assert c.parse_request(prompt) is not None
        assert prompt.startswith("User: ") and prompt.endswith("\nAssistant:")


def test_sample_sets_are_k_different_answers_to_one_request():
    sets = c.sample_sets(200, 5, k=6)
    assert sets == c.sample_sets(200, 5, k=6) and len(sets) == 200
    kinds = set()
    for prompt, responses in sets:
        assert len(responses) == 6 and len(set(responses)) == 6
        request = c.parse_request(prompt)
        assert request is not None
        kinds.add(request.kind)
    assert "risky" in kinds  # few refusal forms, but a risky request still gets six different answers
    with pytest.raises(ValueError, match="k >= 2"):
        c.sample_sets(3, 0, k=1)


def test_sample_request_draws_from_the_mix():
    rng = np.random.default_rng(0)
    kinds = [c.sample_request(rng, {"question": 1.0}).kind for _ in range(20)]
    assert set(kinds) == {"question"}
