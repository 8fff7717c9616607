"""Self-test of tests/families.py: each tiny family reloads with the tokenizer behaviour of the real one."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from tests.families import FAMILIES, build_family

QUESTION = "Question: what is tea? Answer:"
CHAT = [{"role": "user", "content": "what is tea?"}, {"role": "assistant", "content": "tea is a warm drink."}]

# family: (BOS added, EOS appended, has pad, chat template emits BOS)
EXPECTED = {
    "gpt2": (False, False, False, None),
    "gpt2_eos": (False, True, False, None),
    "neox": (False, False, True, None),
    "llama2": (True, False, False, None),
    "llama3": (True, False, False, True),
    "qwen2": (False, False, True, False),
}


@pytest.mark.parametrize("name", FAMILIES)
def test_tokenizer_behaviour(family_dir, name):
    tok = AutoTokenizer.from_pretrained(family_dir(name))
    bos_added, eos_added, has_pad, template_bos = EXPECTED[name]

    ids = tok(QUESTION).input_ids
    bare = tok(QUESTION, add_special_tokens=False).input_ids
    assert len(bare) >= 5  # the corpus makes real words, not single bytes
    assert (ids[0] == tok.bos_token_id) is bos_added
    assert (ids[-1] == tok.eos_token_id) is eos_added
    assert ids == [tok.bos_token_id] * bos_added + bare + [tok.eos_token_id] * eos_added
    assert tok.decode(ids, skip_special_tokens=True) == QUESTION
    assert tok.eos_token_id is not None and tok.eos_token_id < len(tok)

    if has_pad:
        assert tok.pad_token is not None and tok.pad_token_id != tok.eos_token_id
        assert tok.pad_token_id not in bare
    else:
        assert tok.pad_token is None and tok.pad_token_id is None

    if template_bos is None:
        assert tok.chat_template is None
    else:
        text = tok.apply_chat_template(CHAT, tokenize=False)
        assert text.startswith("<|begin_of_text|>" if name == "llama3" else "<|im_start|>user\n")
        bare_chat = tok(text, add_special_tokens=False).input_ids
        if template_bos:  # the double-BOS pitfall: the template has the BOS and the tokenizer adds another
            assert bare_chat[0] == tok.bos_token_id
            assert tok(text).input_ids[:2] == [tok.bos_token_id] * 2
        else:
            assert tok(text).input_ids == bare_chat
        prompt = tok.apply_chat_template(CHAT[:1], tokenize=False, add_generation_prompt=True)
        assert prompt.endswith(
            "assistant<|end_header_id|>\n\n" if name == "llama3" else "<|im_start|>assistant\n"
        )
        assert tok.eos_token in text


def test_special_tokens_by_family(family_dir):
    gpt2 = AutoTokenizer.from_pretrained(family_dir("gpt2"))
    assert gpt2.bos_token == gpt2.eos_token == gpt2.unk_token == "<|endoftext|>"
    neox = AutoTokenizer.from_pretrained(family_dir("neox"))
    assert (neox.eos_token, neox.pad_token) == ("<|endoftext|>", "<|padding|>")
    llama2 = AutoTokenizer.from_pretrained(family_dir("llama2"))
    assert (llama2.bos_token, llama2.eos_token, llama2.unk_token) == ("<s>", "</s>", "<unk>")
    llama3 = AutoTokenizer.from_pretrained(family_dir("llama3"))
    assert (llama3.bos_token, llama3.eos_token) == ("<|begin_of_text|>", "<|eot_id|>")
    headers = "<|start_header_id|>user<|end_header_id|> hi<|end_of_text|>"
    ids = llama3(headers, add_special_tokens=False).input_ids
    assert llama3.convert_ids_to_tokens([ids[0], ids[-1]]) == ["<|start_header_id|>", "<|end_of_text|>"]
    assert llama3.decode(ids, skip_special_tokens=True) == "user hi"
    qwen2 = AutoTokenizer.from_pretrained(family_dir("qwen2"))
    assert (qwen2.bos_token, qwen2.eos_token, qwen2.pad_token) == (None, "<|im_end|>", "<|endoftext|>")
    assert qwen2("<|im_start|>user").input_ids[0] == qwen2.convert_tokens_to_ids("<|im_start|>")
    assert "<|im_start|>" in qwen2.all_special_tokens


def test_llama2_dummy_prefix_quirk(family_dir):
    tok = AutoTokenizer.from_pretrained(family_dir("llama2"))
    joint = tok.convert_ids_to_tokens(tok(QUESTION + " tea is").input_ids)
    assert joint[0] == "<s>" and "▁tea" in joint
    alone = tok.convert_ids_to_tokens(tok(" tea", add_special_tokens=False).input_ids)
    assert alone == ["▁", "▁tea"]  # legacy SentencePiece: dummy prefix, then the space itself
    assert tok.convert_ids_to_tokens(tok("tea", add_special_tokens=False).input_ids) == ["▁tea"]
    # byte fallback: anything encodes, and decodes back
    text = "héllo ✓ 😀"
    ids = tok(text, add_special_tokens=False).input_ids
    assert tok.unk_token_id not in ids and "<0xC3>" in tok.convert_ids_to_tokens(ids)
    assert tok.decode(ids) == text


def test_byte_level_has_no_dummy_prefix(family_dir):
    for name in ("gpt2", "llama3", "qwen2"):
        tok = AutoTokenizer.from_pretrained(family_dir(name))
        assert tok.convert_ids_to_tokens(tok(" tea", add_special_tokens=False).input_ids) == ["Ġtea"]


@pytest.mark.parametrize("name", FAMILIES)
def test_models_load_and_generate(family_dir, name):
    path = family_dir(name, n_positions=64)
    tok = AutoTokenizer.from_pretrained(path)
    config = AutoConfig.from_pretrained(path)
    assert config.vocab_size == len(tok)
    assert (config.bos_token_id, config.eos_token_id, config.pad_token_id) == (
        tok.bos_token_id,
        tok.eos_token_id,
        tok.pad_token_id,
    )
    assert getattr(config, "n_positions", None) or config.max_position_embeddings == 64

    model = AutoModelForCausalLM.from_pretrained(path).eval()
    assert model.generation_config.eos_token_id == tok.eos_token_id
    if name.startswith("gpt2"):
        assert (
            config.n_positions == 64 and config.resid_pdrop == config.embd_pdrop == config.attn_pdrop == 0.1
        )
        assert model.config.tie_word_embeddings
    batch = tok([QUESTION], return_tensors="pt")
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=4, do_sample=False, pad_token_id=pad_id)
    assert out.shape[1] <= batch.input_ids.shape[1] + 4 and out.shape[1] > batch.input_ids.shape[1]

    rm = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
    with torch.no_grad():
        assert rm(**batch).logits.shape == (1, 1)


def test_build_is_deterministic(tmp_path):
    a = build_family("llama3", tmp_path / "a", n_positions=32, seed=1)
    b = build_family("llama3", tmp_path / "b", n_positions=32, seed=1)
    assert (a / "tokenizer.json").read_text() == (b / "tokenizer.json").read_text()
    ma, mb = AutoModelForCausalLM.from_pretrained(a), AutoModelForCausalLM.from_pretrained(b)
    assert all(torch.equal(p, q) for p, q in zip(ma.parameters(), mb.parameters(), strict=True))
    with pytest.raises(ValueError):
        build_family("bert", tmp_path / "c")
