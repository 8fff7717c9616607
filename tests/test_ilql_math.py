"""ILQL's losses and logit perturbation: values worked out by hand."""

import math

import pytest
import torch

from rlhf.losses import expectile_loss, ilql_loss
from rlhf.rl_math import ilql_steered_logits


def test_expectile_at_half_is_half_the_squared_error():
    diff = torch.tensor([[2.0, -1.0, 3.0]])
    mask = torch.tensor([[1, 1, 0]])
    # tau = 0.5: 0.5 * (4 + 1) / 2 = 1.25 (the masked 3.0 is ignored)
    assert expectile_loss(diff, 0.5, mask).item() == pytest.approx(1.25)
    # tau = 0.9: (0.9 * 4 + 0.1 * 1) / 2 = 1.85 -- under-estimates (diff > 0) cost 9x more
    assert expectile_loss(diff, 0.9, mask).item() == pytest.approx(1.85)


def test_expectile_minimiser_is_an_upper_expectile():
    # V fitted to targets {0, 1} with tau = 0.8: the minimiser of 0.2 v^2 + 0.8 (1 - v)^2 is v = 0.8
    v = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([v], lr=0.5)
    targets = torch.tensor([[0.0, 1.0]])
    for _ in range(200):
        opt.zero_grad()
        expectile_loss(targets - v, 0.8, torch.ones(1, 2)).backward()
        opt.step()
    assert v.item() == pytest.approx(0.8, abs=1e-4)


def test_ilql_loss_by_hand():
    # One response of T = 2 tokens over a vocabulary of 2; reward 1 on the last (terminal) token.
    q1 = torch.tensor([[0.5, 1.0]])
    q2 = torch.tensor([[0.0, 2.0]])
    target_q = torch.tensor([[0.4, 1.2]])
    values = torch.tensor([[0.3, 0.6]])
    logits = torch.zeros(1, 2, 2)  # uniform: CE = log 2 per token and head
    actions = torch.tensor([[0, 1]])
    rewards = torch.tensor([[0.0, 1.0]])
    mask = torch.ones(1, 2)
    loss, stats = ilql_loss(
        q1, q2, target_q, values, logits, logits, actions, rewards, mask, gamma=0.5, tau=0.5, cql_scale=0.1
    )
    # targets y = [0 + 0.5 * V(s1) = 0.3, 1 (terminal)]
    # L_Q = mean((0.5-0.3)^2, (1-1)^2) + mean((0-0.3)^2, (2-1)^2) = 0.02 + 0.545 = 0.565
    # L_V (tau 0.5) = 0.5 * mean((0.4-0.3)^2, (1.2-0.6)^2) = 0.5 * 0.185 = 0.0925
    # L_CQL = 2 * log 2
    assert stats["loss/q"] == pytest.approx(0.565)
    assert stats["loss/v"] == pytest.approx(0.0925)
    assert stats["loss/cql"] == pytest.approx(2 * math.log(2))
    assert loss.item() == pytest.approx(0.565 + 0.0925 + 0.1 * 2 * math.log(2))
    assert stats["values/target"] == pytest.approx(0.65)


def test_ilql_padding_is_ignored_and_terminal_follows_the_mask():
    # row 2 has one valid token: it is terminal, so its target is its reward alone
    q = torch.tensor([[0.0, 0.0], [0.0, 9.0]])
    values = torch.tensor([[1.0, 0.0], [5.0, 7.0]])
    rewards = torch.tensor([[0.0, 2.0], [3.0, 0.0]])
    mask = torch.tensor([[1, 1], [1, 0]])
    logits = torch.zeros(2, 2, 3)
    _, stats = ilql_loss(
        q, q, q, values, logits, logits, torch.zeros(2, 2, dtype=torch.long), rewards, mask, gamma=1.0
    )
    # y = [[V(s1) = 0, 2], [3]]: L_Q per head = (0 + 4 + 9) / 3; two heads
    assert stats["loss/q"] == pytest.approx(2 * 13 / 3)


def test_steered_logits():
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25]]))
    q = torch.tensor([[0.0, 2.0, 1.0]])
    v = torch.tensor([[1.0]])
    # beta = 0: the base log-probs
    torch.testing.assert_close(ilql_steered_logits(logits, q, v, 0.0), logits)
    # beta = 1: log p + (Q - V) = [log .5 - 1, log .25 + 1, log .25 + 0]
    out = ilql_steered_logits(logits, q, v, 1.0)
    expected = torch.tensor([[math.log(0.5) - 1, math.log(0.25) + 1, math.log(0.25)]])
    torch.testing.assert_close(out, expected)
    # top-2 keeps the two largest perturbed tokens (1 and 2), drops token 0
    top = ilql_steered_logits(logits, q, v, 1.0, top_k=2)
    assert top[0, 0] == float("-inf") and torch.isfinite(top[0, 1:]).all()


def test_n_step_targets_by_hand():
    from rlhf.losses import n_step_targets

    rewards = torch.tensor([[0.0, 1.0, 0.0, 2.0], [5.0, 0.0, 0.0, 0.0]])
    values = torch.tensor([[10.0, 20.0, 30.0, 40.0], [7.0, 8.0, 9.0, 9.0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    # one step, gamma 0.5: y_t = r_t + 0.5 V(s_{t+1}), last valid token terminal
    # row 1: [0 + 10, 1 + 15, 0 + 20, 2]; row 2: [5 + 4, 0 (terminal), 0, 0]
    y1 = n_step_targets(rewards, values, mask, 0.5, 1)
    torch.testing.assert_close(y1, torch.tensor([[10.0, 16.0, 20.0, 2.0], [9.0, 0.0, 0.0, 0.0]]))
    # two steps: y_0 = r0 + .5 r1 + .25 V(s2) = 0 + .5 + 7.5 = 8; y_1 = 1 + 0 + .25 * 40 = 11;
    # y_2 = 0 + .5 * 2 = 1; y_3 = 2; row 2: y_0 = 5 + 0 + .25 * 0 (s2 is past the end) = 5
    y2 = n_step_targets(rewards, values, mask, 0.5, 2)
    torch.testing.assert_close(y2, torch.tensor([[8.0, 11.0, 1.0, 2.0], [5.0, 0.0, 0.0, 0.0]]))
    # n >= T: Monte-Carlo returns: row 1 [0 + .5 + 0 + .25 = 0.75, 1 + .5 = 1.5, 1, 2]
    mc = n_step_targets(rewards, values, mask, 0.5, 10)
    torch.testing.assert_close(mc[0], torch.tensor([0.75, 1.5, 1.0, 2.0]))
