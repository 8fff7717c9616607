"""Tiny local stand-ins for real model families, for a compatibility test matrix (no hub needed).

`build_family(name, path)` saves a 2-layer, 32-wide model with random weights and a tokenizer trained on
`CORPUS` with the `tokenizers` library. The point is the tokenizer *behaviour* of each real family:

========  ==========  ====================  ==================  =========  ========================
family    model       tokenizer             BOS added           EOS added  pad / chat template
========  ==========  ====================  ==================  =========  ========================
gpt2      GPT-2       byte-level BPE        no                  no         none / none
gpt2_eos  GPT-2       byte-level BPE        no                  yes        none / none
neox      GPT-NeoX    byte-level BPE        no                  no         <|padding|> / none
llama2    Llama       SentencePiece-style   <s>                 no         none / none
llama3    Llama       byte-level BPE        <|begin_of_text|>   no         none / emits BOS itself
qwen2     Qwen2       byte-level BPE        no (no BOS at all)  no         <|endoftext|> / ChatML
========  ==========  ====================  ==================  =========  ========================

The llama2 tokenizer keeps the legacy SentencePiece quirk: a dummy "▁" is prepended to every encoded
string, so " tea" alone encodes as ["▁", "▁tea"], not as in the joint encoding of "... Answer: tea".
The llama3 chat template starts with "<|begin_of_text|>" and the tokenizer adds it again when the
rendered text is encoded with special tokens: the known double-BOS pitfall.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FAMILIES = ("gpt2", "gpt2_eos", "neox", "llama2", "llama3", "qwen2")

CORPUS = [
    "Question: is the sky blue? Answer: yes.",
    "Question: is the grass red? Answer: no.",
    "Question: is the sun hot? Answer: yes.",
    "Question: is the snow black? Answer: no.",
    "Question: is water wet? Answer: yes.",
    "Question: what is tea? Answer: tea is a warm drink.",
    "Question: what is bread? Answer: bread is a food made from flour and water.",
    "Question: what is the sky? Answer: the sky is the air above us.",
    "Question: what is a cat? Answer: a cat is a small animal.",
    "Question: where is the sun? Answer: the sun is in the sky.",
    "Question: who are you? Answer: I am a helpful assistant.",
    "yes.",
    "no.",
    "Yes, it is.",
    "No, it is not.",
    "User: what is tea?\nAssistant: Tea is a drink made from leaves.",
    "User: how do I bake bread?\nAssistant: Mix flour and water, knead, then bake.",
    "User: I feel tired today.\nAssistant: Rest a little and drink some water.",
    "User: can you help me?\nAssistant: Yes, I can help you with that.",
    "User: tell me a story.\nAssistant: Once upon a time there was a good dog.",
    "User: thank you!\nAssistant: You are welcome.",
    "User:",
    "Assistant:",
    "user assistant system: You are a helpful assistant. The user asks and the assistant answers.",
    "The quick brown fox jumps over the lazy dog.",
    "The cat sat on the mat and the dog sat on the rug.",
    "I like to drink tea in the morning and water in the day.",
    "It was a good day, and the weather was warm and sunny.",
    "This is a good answer. That is a bad answer.",
    "We went to the shop to buy some milk, eggs and bread.",
    "She said that he would come home at night.",
    "They have a big house with a small garden.",
    "What do you think about this? I think it is fine.",
    "The answer is correct. The answer is wrong.",
    "Please write a short poem about the sea.",
    "The sea is blue and the waves are white.",
    "One, two, three, four, five, six, seven, eight, nine, ten.",
    "0 1 2 3 4 5 6 7 8 9 10 12 100 2024",
    "Hello world! How are you? I am fine, thanks.",
    "the of and to in is it you that he was for on are with as I his they be at one have this from",
    "or had by word but not what all were we when your can said there use an each which she do how",
    "their if will up other about out many then them these so some her would make like him into time",
    "has look two more write go see number no way could people my than first been call who its now",
    "good bad help question answer drink food warm cold hot sky blue red green tea coffee milk",
]

# Byte-level BPE vocab (before special tokens): 256 byte symbols + ~250 merges.
_BYTE_LEVEL_VOCAB = 500
# SentencePiece-style BPE: characters + merges; the 256 <0xXX> byte-fallback pieces come on top.
_SPM_VOCAB = 280

_LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

LLAMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


# ----------------------------------------------------------------------------- tokenizers


def _byte_level(special: list[str], pattern: str | None = None, nfc: bool = False) -> Any:
    """A byte-level BPE `tokenizers.Tokenizer` (GPT-2 style, or Llama-3/Qwen2 style with a split regex)."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    if nfc:  # Qwen2
        tok.normalizer = normalizers.NFC()
    if pattern is None:  # GPT-2 / NeoX: the ByteLevel pre-tokenizer's own regex
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    else:  # Llama-3 / Qwen2: the split regex first, then the byte mapping
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=_BYTE_LEVEL_VOCAB + len(special),
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    return tok


def _sentencepiece_style() -> Any:
    """A Llama-2 style fast tokenizer: BPE over "▁"-joined text with byte fallback and the dummy prefix.

    As in the converted Llama-2 tokenizer.json: ids 0..2 are <unk>, <s>, </s>; 3..258 the byte pieces
    <0x00>..<0xFF> (plain vocab entries, not added tokens); then the learned pieces.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    # Train with words split before each "▁" so merges never cross a word boundary (as SentencePiece);
    # the final tokenizer has no pre-tokenizer, like the real one.
    trainer_tok = Tokenizer(models.BPE())
    trainer_tok.normalizer = normalizer
    trainer_tok.pre_tokenizer = pre_tokenizers.Split("▁", behavior="merged_with_next")
    trainer = trainers.BpeTrainer(vocab_size=_SPM_VOCAB, show_progress=False, initial_alphabet=["▁"])
    trainer_tok.train_from_iterator(CORPUS, trainer=trainer)
    learned = json.loads(trainer_tok.to_str())["model"]

    specials = ["<unk>", "<s>", "</s>"]
    pieces = specials + [f"<0x{b:02X}>" for b in range(256)]
    pieces += [p for p, _ in sorted(learned["vocab"].items(), key=lambda kv: kv[1]) if p not in pieces]
    vocab = {p: i for i, p in enumerate(pieces)}
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in learned["merges"]]

    tok = Tokenizer(
        models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True)
    )
    tok.normalizer = normalizer
    tok.pre_tokenizer = None
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    return tok


def _template(tok: Any, single: str, pair: str) -> Any:
    from tokenizers import processors

    names = {t for t in (single + " " + pair).split() if not t.startswith("$")}
    names = {t.split(":")[0] for t in names}
    return processors.TemplateProcessing(
        single=single, pair=pair, special_tokens=[(t, tok.token_to_id(t)) for t in sorted(names)]
    )


def build_tokenizer(name: str, model_max_length: int = 128) -> Any:
    """The family's tokenizer, as a transformers fast tokenizer (`PreTrainedTokenizerFast`)."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    eot = "<|endoftext|>"
    chat_template = None
    if name in ("gpt2", "gpt2_eos"):
        tok = _byte_level([eot])
        if name == "gpt2":
            tok.post_processor = processors.ByteLevel(trim_offsets=False)
        else:
            tok.post_processor = _template(tok, f"$A {eot}", f"$A {eot} $B:1 {eot}:1")
        special = dict(bos_token=eot, eos_token=eot, unk_token=eot)
    elif name == "neox":
        tok = _byte_level([eot, "<|padding|>"])
        tok.post_processor = processors.ByteLevel(trim_offsets=True)
        special = dict(bos_token=eot, eos_token=eot, unk_token=eot, pad_token="<|padding|>")
    elif name == "llama2":
        tok = _sentencepiece_style()
        tok.post_processor = _template(tok, "<s> $A", "<s> $A <s>:1 $B:1")
        special = dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    elif name == "llama3":
        specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>"]
        tok = _byte_level([*specials, "<|eot_id|>"], _LLAMA3_PATTERN)
        bos = "<|begin_of_text|>"
        tok.post_processor = processors.Sequence(
            [processors.ByteLevel(trim_offsets=False), _template(tok, f"{bos} $A", f"{bos} $A {bos}:1 $B:1")]
        )
        special = dict(bos_token=bos, eos_token="<|eot_id|>")
        chat_template = LLAMA3_CHAT_TEMPLATE
    elif name == "qwen2":
        tok = _byte_level([eot, "<|im_start|>", "<|im_end|>"], _QWEN2_PATTERN, nfc=True)
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
        # transformers loads any qwen2 checkpoint with Qwen2Tokenizer, whose unk default is <|endoftext|>
        special = dict(
            bos_token=None, eos_token="<|im_end|>", pad_token=eot, unk_token=None,
            extra_special_tokens=["<|im_start|>", "<|im_end|>"],  # Qwen2's additional_special_tokens
        )  # fmt: skip
        chat_template = CHATML_TEMPLATE
    else:
        raise ValueError(f"unknown family {name!r}; expected one of {FAMILIES}")

    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=model_max_length, **special)
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    return tokenizer


# ----------------------------------------------------------------------------- models


def build_model(name: str, tokenizer: Any, n_positions: int = 128, seed: int = 0) -> Any:
    """A 2-layer, 32-wide causal LM of the family with random weights, sized to `tokenizer`."""
    import torch
    from transformers import AutoModelForCausalLM, GPT2Config, GPTNeoXConfig, LlamaConfig, Qwen2Config

    ids = dict(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    if name in ("gpt2", "gpt2_eos"):  # absolute positions, Conv1D, default dropout 0.1, tied embeddings
        config = GPT2Config(n_positions=n_positions, n_embd=32, n_layer=2, n_head=2, **ids)
    elif name == "neox":  # rotary (partial), parallel residual, untied
        config = GPTNeoXConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            max_position_embeddings=n_positions, use_parallel_residual=True, tie_word_embeddings=False, **ids,
        )  # fmt: skip
    elif name in ("llama2", "llama3"):  # llama2: multi-head; llama3: grouped-query attention
        config = LlamaConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=2 if name == "llama2" else 1, max_position_embeddings=n_positions,
            tie_word_embeddings=False, **ids,
        )  # fmt: skip
    elif name == "qwen2":  # qkv bias, grouped-query attention, tied (as the small Qwen2 models)
        config = Qwen2Config(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=1, max_position_embeddings=n_positions, tie_word_embeddings=True, **ids,
        )  # fmt: skip
    else:
        raise ValueError(f"unknown family {name!r}; expected one of {FAMILIES}")
    with torch.random.fork_rng(devices=[]):  # leave the caller's RNG state alone
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)
    gen = model.generation_config
    gen.bos_token_id = tokenizer.bos_token_id
    gen.eos_token_id = tokenizer.eos_token_id
    gen.pad_token_id = tokenizer.pad_token_id
    return model


def build_family(name: str, path: Path, n_positions: int = 128, seed: int = 0) -> Path:
    """Build family `name` into directory `path` (created if missing) with save_pretrained; returns `path`.

    `AutoTokenizer`, `AutoModelForCausalLM` and `AutoModelForSequenceClassification` load the result.
    """
    if name not in FAMILIES:
        raise ValueError(f"unknown family {name!r}; expected one of {FAMILIES}")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(name, model_max_length=n_positions)
    model = build_model(name, tokenizer, n_positions=n_positions, seed=seed)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
