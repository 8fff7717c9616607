"""FLOP counts of training passes (rlhf.flops), by hand and against torch's own FLOP counter."""

from __future__ import annotations

import torch

from rlhf.flops import attention_pairs, forward_flops, layout_tokens, training_flops


def tiny_llama(attention: str = "eager"):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    # hidden 8, 2 heads of 4, MLP 16, 2 layers, vocabulary 32
    config = LlamaConfig(vocab_size=32, hidden_size=8, intermediate_size=16, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64)  # fmt: skip
    config._attn_implementation = attention
    return LlamaForCausalLM(config)


def test_attention_pairs_by_hand():
    # rows of their own: a row of 3 attends 1 + 2 + 3 = 6 pairs, a row of 2: 1 + 2 = 3
    assert attention_pairs([(3, []), (2, [])]) == 9 == attention_pairs([(2, [1]), (1, [1])])
    # a prompt of 2 shared by responses of 1 and 2: 3 in the prompt, 1 x 2 + 1 = 3 and 2 x 2 + 3 = 7:
    # 13, the 16 of unshared rows of 3 and 4 tokens (6 + 10) less the second copy of the prompt's 3
    assert attention_pairs([(2, [1, 2])]) == 13
    assert attention_pairs([(2, [1]), (2, [2])]) == 16
    assert layout_tokens([(2, [1, 2])]) == 5 and layout_tokens([(2, [1]), (2, [2])]) == 7


def test_forward_and_training_flops_of_a_hand_worked_config():
    # The tiny Llama: per layer q, k, v, o 4 x 8 x 8 = 256 and MLP gate, up, down 3 x 8 x 16 = 384: 640 x 2
    # layers = 1280 token weights; LM head 8 x 32 = 256. One row of 5 tokens, all 5 scored, 15 causal pairs:
    # 2 x 1280 x 5 = 12800, + 2 x 256 x 5 = 2560, + 4 x 8 x 2 x 15 = 960 -> 16320; training 3 x 16320 = 48960.
    forward = forward_flops(1280, 256, 8, 2, tokens=5, scored_tokens=5, attention_pairs=15)
    assert forward == 16320
    assert training_flops(forward) == 48960
    # two rows of 3 and 2 tokens, 2 scored: 2 x 1280 x 5 + 2 x 256 x 2 + 4 x 8 x 2 x 9 = 12800 + 1024 + 576
    assert forward_flops(1280, 256, 8, 2, 5, 2, attention_pairs([(3, []), (2, [])])) == 14400


def test_flops_match_torch_flop_counter_on_an_eager_llama():
    """torch's FlopCounterMode counts the same matrix products: eager attention multiplies the whole
    l x l square (masking half of it afterwards), so with attention_pairs = l^2 the counts agree exactly."""
    from torch.utils.flop_counter import FlopCounterMode

    model = tiny_llama()
    ids = torch.randint(0, 32, (1, 5))
    with FlopCounterMode(display=False) as counter:
        model(input_ids=ids, use_cache=False).logits.sum().backward()
    assert counter.get_total_flops() == training_flops(forward_flops(1280, 256, 8, 2, 5, 5, 5 * 5)) == 50880


def test_update_flops_reads_the_policy_and_its_shared_value_head():
    from rlhf.algorithms.ppo import PolicyModels
    from rlhf.bench import update_flops
    from rlhf.models import ValueModel

    model = tiny_llama("sdpa")
    head = torch.nn.Linear(8, 1)
    stats = {"perf/update_tokens": 5, "perf/update_scored_tokens": 2, "perf/update_attention_pairs": 9}
    # as the hand-worked two rows above, the value head's 8 weights added at the 2 scored positions:
    # 3 x (14400 + 2 x 8 x 2) = 3 x 14432
    assert update_flops(PolicyModels(model, None, head, None), stats) == 3 * 14432
    assert update_flops(PolicyModels(model, None, None, None), stats) == 3 * 14400
    # a separate critic: its trunk's 1280 weights at every token and attention (2 x 1280 x 5 + 576 =
    # 13376), its head's 8 at the scored positions: 3 x (14432 + 13376)
    critic = ValueModel(model)
    assert update_flops(PolicyModels(model, None, critic, None), stats) == 3 * (14432 + 13376)


def test_matmul_peak_is_a_positive_rate():
    from rlhf.bench import matmul_peak_gflops

    assert matmul_peak_gflops(n=64, repeats=3) > 0
