"""Floating-point operations of a causal transformer's training passes, to set a measured update speed
against the machine's matrix-multiply peak (model FLOPs utilisation, as in PaLM, Chowdhery et al. 2022,
appendix B). Pure arithmetic on sizes: no models, no tensors.
"""

from __future__ import annotations


def attention_pairs(layout: list[tuple[int, list[int]]]) -> int:
    """Query-key pairs causal attention scores in a packed batch whose groups share a prompt: per group
    (prompt length p, [response lengths r]), p (p + 1) / 2 within the prompt, and for each response
    r p over the prompt plus r (r + 1) / 2 within itself. A row of its own is (p, [r]): (p + r)(p + r + 1) / 2,
    each position attending to itself and every earlier one."""
    return sum(p * (p + 1) // 2 + sum(r * p + r * (r + 1) // 2 for r in rs) for p, rs in layout)


def layout_tokens(layout: list[tuple[int, list[int]]]) -> int:
    """Tokens a forward over the layout needs: each shared prompt once, every response."""
    return sum(p + sum(rs) for p, rs in layout)


def forward_flops(
    token_weights: int,
    scored_weights: int,
    attention_width: int,
    layers: int,
    tokens: int,
    scored_tokens: int,
    attention_pairs: int,
) -> int:
    """Multiply-add FLOPs (2 per multiply-add) of one forward over a packed batch:

        F = 2 P_tok N + 2 P_head K + 4 d_attn n_layers A

    token_weights P_tok: weights of the matrix products every token goes through (each block's query, key,
    value, output and MLP projections; embeddings are look-ups, not products). scored_weights P_head: those
    applied only at the K scored positions (the LM head d x V, a shared value head d x 1). tokens N: real
    tokens (padding is not useful work and is not counted). attention_pairs A: `causal_attention_pairs`;
    each pair costs one d_attn-long dot product for the scores (Q K^T) and one for the weighted values
    (softmax(.) V), in every layer, with d_attn = heads x head dim. Counting only the causal half is the
    conservative choice (a kernel that computes the full square and masks it does more work, not more
    useful work). Norms, rotary embeddings, activations, softmax and the loss are not counted: they are
    element-wise, a few FLOPs per activation against the products' hundreds.
    """
    return (
        2 * token_weights * tokens
        + 2 * scored_weights * scored_tokens
        + 4 * attention_width * layers * attention_pairs
    )


def training_flops(forward: int) -> int:
    """Forward plus backward: the backward computes each product's gradients with respect to both its input
    and its weight, two products of the forward's size, so 3 F in all (Kaplan et al. 2020, section 2.1)."""
    return 3 * forward
