"""KL(pi || pi_ref) of a policy from a reference, estimated on the policy's own samples, and the note that
goes with a negative estimate wherever one is printed."""

from __future__ import annotations

from typing import Any

import torch


def kl_note(kl: float) -> str:
    """What to print after a sampled KL estimate: nothing when it is >= 0; when it is negative, that it is an
    estimate (KL itself is never negative), so a negative value means about 0 plus sampling noise."""
    if not kl < 0:
        return ""
    return " (a sampled estimate: KL itself is >= 0, so a negative value means about 0 plus sampling noise)"


@torch.no_grad()
def sampled_kl(
    policy: Any, reference: Any, tokenizer: Any, samples: Any, temperature: float = 1.0, batch_size: int = 32
) -> list[float]:
    """Per response y ~ pi(. | x): sum_t log pi(y_t | x, y_<t) - log pi_ref(y_t | x, y_<t).

    Its mean over samples is the k1 Monte-Carlo estimate of the sequence KL(pi || pi_ref), the quantity
    PPO's penalty and DPO's beta constrain (unbiased; a single sample can be negative). `samples` is a
    `rlhf.rollout.Samples` drawn from `policy` at `temperature`, whose response ids include the EOS when
    emitted. Both models see the same tokens, left-padded prompts then right-padded responses. With
    `policy=None` the policy side is `samples.logprobs`, the log-probs the sampler recorded (a steered
    policy such as ILQL's is not one model's forward).
    """
    from rlhf.logprobs import response_logprobs, sequence_logprob
    from rlhf.rollout import prompt_batch

    if policy is None and samples.logprobs is None:
        raise ValueError("sampled_kl needs a policy model or samples that carry their log-probs")
    device = next((policy or reference).parameters()).device
    tokenizer.padding_side = "left"
    kls: list[float] = []
    for start in range(0, len(samples.prompts), batch_size):
        prompts = samples.prompts[start : start + batch_size]
        responses = [
            ids or [tokenizer.eos_token_id] for ids in samples.response_ids[start : start + batch_size]
        ]
        span = max(map(len, responses))
        enc = prompt_batch(tokenizer, prompts, reference, span, "cpu")  # as the sampler encoded them
        width = enc["input_ids"].shape[1]
        response_ids = torch.full((len(prompts), span), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), span), dtype=torch.long)
        for i, ids in enumerate(responses):
            response_ids[i, : len(ids)] = torch.tensor(ids)
            mask[i, : len(ids)] = 1
        input_ids = torch.cat([enc["input_ids"], response_ids], dim=1).to(device)
        attention_mask = torch.cat([enc["attention_mask"], mask], dim=1).to(device)
        mask = mask.to(device)
        ref_logps, _ = response_logprobs(reference, input_ids, attention_mask, width, temperature)
        if policy is None:
            policy_logp = torch.tensor(samples.logprobs[start : start + batch_size], device=device)
        else:
            logps, _ = response_logprobs(policy, input_ids, attention_mask, width, temperature)
            policy_logp = sequence_logprob(logps.float(), mask)
        kl = policy_logp - sequence_logprob(ref_logps.float(), mask)  # (B,)
        kls.extend(kl.tolist())
    return kls


# Words, digits, punctuation, accents, CJK, an emoji, repeated spaces and newlines: text on which two
# tokenizers with the same vocabulary but other merges, normalisation or BOS rules give other ids.
PROBE_TEXT = "Hello world! The café's 2 naïve users asked: what is 3 + 4?\n  Tea,  東京 🙂\tdone."


def tokenizer_difference(tokenizer: Any, other: Any) -> str | None:
    """Why the token ids of `tokenizer` do not mean the same text to `other`, or None when they do: the
    vocabularies (token -> id), the EOS id, or the encoding of `PROBE_TEXT` as a prompt (BOS included)
    differ. Two models can be compared token by token (a KL on one's samples) only when this is None."""
    from rlhf.sequences import encode_prompt

    vocab, other_vocab = tokenizer.get_vocab(), other.get_vocab()
    if vocab != other_vocab:
        if len(vocab) != len(other_vocab):
            return f"vocabularies of {len(vocab)} and {len(other_vocab)} tokens"
        changed = sum(other_vocab.get(token) != i for token, i in vocab.items())
        return f"vocabularies of {len(vocab)} tokens that differ in {changed} of them"
    if tokenizer.eos_token_id != other.eos_token_id:
        return f"EOS ids {tokenizer.eos_token_id} and {other.eos_token_id}"
    ids, other_ids = encode_prompt(tokenizer, PROBE_TEXT), encode_prompt(other, PROBE_TEXT)
    if ids != other_ids:
        return (
            f"one vocabulary but other token ids for the text {PROBE_TEXT!r} "
            f"({len(ids)} and {len(other_ids)} tokens)"
        )
    return None


def check_same_tokenizer(tokenizer: Any, reference_tokenizer: Any, model: Any, reference: Any) -> None:
    """UserError naming both models when `tokenizer_difference` finds their token ids incomparable."""
    from rlhf.errors import UserError

    difference = tokenizer_difference(tokenizer, reference_tokenizer)
    if difference is not None:
        raise UserError(
            f"{model} and the reference {reference} have different tokenizers ({difference}): the KL compares "
            "them token by token; give a reference with the model's tokenizer, such as its initial model"
        )
