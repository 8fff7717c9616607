"""Model I/O through rlhf.models: a tiny saved model loads; missing paths and tokenizers give clear errors."""

from __future__ import annotations

import shutil

import pytest
import torch

from rlhf.errors import UserError
from rlhf.models import (
    load_causal_lm,
    load_tokenizer,
    resolve_device,
    resolve_dtype,
    save_atomic,
    save_pretrained_atomic,
)
from tests.conftest import make_model, make_tokenizer


def test_loads_tiny_model_and_tokenizer(tiny_lm_dir):
    model, tokenizer = load_causal_lm(tiny_lm_dir, device="cpu")
    assert type(model).__name__ == "LlamaForCausalLM"
    assert not model.training  # loaded for inference; trainers switch modes themselves
    assert tokenizer.pad_token == "<|pad|>" and tokenizer.padding_side == "left"
    ids = tokenizer("User: what is tea?", return_tensors="pt")["input_ids"]
    out = model.generate(ids, max_new_tokens=3, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert out.shape == (1, ids.shape[1] + 3)


def test_same_weights_as_saved(tiny_lm_dir):
    from transformers import AutoModelForCausalLM

    plain = AutoModelForCausalLM.from_pretrained(tiny_lm_dir)
    ours, _ = load_causal_lm(tiny_lm_dir, device="cpu", dtype="float32")
    for (name, a), (_, b) in zip(plain.state_dict().items(), ours.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_dtype_override(tiny_lm_dir):
    model, _ = load_causal_lm(tiny_lm_dir, device="cpu", dtype="bfloat16")
    assert next(model.parameters()).dtype == torch.bfloat16


def test_missing_path_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match=r"model path .*does-not-exist does not exist"):
        load_causal_lm(tmp_path / "does-not-exist")


def test_unknown_model_id_says_not_in_cache():
    with pytest.raises(
        UserError, match="neither a local directory nor a model in the local Hugging Face cache"
    ):
        load_causal_lm("no-such-org/no-such-model-xyz")


def test_directory_without_config(tmp_path):
    with pytest.raises(UserError, match="has no config.json"):
        load_causal_lm(tmp_path)


def test_missing_tokenizer_is_a_user_error(tmp_path):
    make_model(make_tokenizer()).save_pretrained(tmp_path)
    with pytest.raises(UserError, match=r"no tokenizer in .*: expected one of tokenizer.json"):
        load_causal_lm(tmp_path)


def test_tokenizer_from_separate_path(tmp_path, tiny_lm_dir):
    make_model(make_tokenizer()).save_pretrained(tmp_path)
    model, tokenizer = load_causal_lm(tmp_path, device="cpu", tokenizer_path=tiny_lm_dir)
    assert tokenizer.eos_token == "<|endoftext|>"


def test_tokenizer_without_pad_uses_eos_with_warning(tmp_path):
    tokenizer = make_tokenizer()
    tokenizer.pad_token = None
    tokenizer.save_pretrained(tmp_path)
    with pytest.warns(UserWarning, match="no pad token; using its EOS token"):
        loaded = load_tokenizer(tmp_path)
    assert loaded.pad_token == loaded.eos_token == "<|endoftext|>"


def test_missing_pad_token_is_warned_once_per_path(tmp_path):
    import warnings

    tokenizer = make_tokenizer()
    tokenizer.pad_token = None
    for name in ("a", "b"):
        tokenizer.save_pretrained(tmp_path / name)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # count our own once-per-path, not Python's once-per-line
        for name in ("a", "a", "b", "a"):  # a reward run loads its backbone's tokenizer twice
            assert load_tokenizer(tmp_path / name, padding_side="right").pad_token == "<|endoftext|>"
    pads = [str(w.message) for w in caught if "no pad token" in str(w.message)]
    assert [p.split(" has no pad")[0].rsplit("/", 1)[1] for p in pads] == ["a", "b"]


def test_device_and_dtype_resolution():
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("float16") == torch.float16
    with pytest.raises(UserError, match="unknown dtype"):
        resolve_dtype("float8")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="CUDA is not available"):
            resolve_device("cuda")


def test_atomic_save_keeps_old_checkpoint_on_failure(tmp_path, tiny_lm_dir):
    out = tmp_path / "ckpt"
    shutil.copytree(tiny_lm_dir, out)
    before = sorted(p.name for p in out.iterdir())

    def crash(path):
        (path / "partial.bin").write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        save_atomic(out, crash)
    assert sorted(p.name for p in out.iterdir()) == before  # old checkpoint untouched
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no temporary directory left behind


def test_save_pretrained_atomic_round_trip(tmp_path):
    tokenizer = make_tokenizer()
    model = make_model(tokenizer)
    out = save_pretrained_atomic(
        tmp_path / "m", model, tokenizer, extra_files={"note.txt": lambda p: p.write_text("hi")}
    )
    loaded, _ = load_causal_lm(out, device="cpu")
    assert (out / "note.txt").read_text() == "hi"
    assert torch.equal(loaded.lm_head.weight, model.lm_head.weight)


def test_model_id_found_in_local_hub_cache(tmp_path, tiny_lm_dir, monkeypatch):
    # Lay out the hub cache as huggingface_hub does: models--org--name/{refs/main, snapshots/<rev>/}.
    import huggingface_hub.constants as hub_constants

    repo = tmp_path / "models--acme--tiny-llama"
    snapshot = repo / "snapshots" / "abc123"
    shutil.copytree(tiny_lm_dir, snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path))
    model, tokenizer = load_causal_lm("acme/tiny-llama", device="cpu")
    assert type(model).__name__ == "LlamaForCausalLM" and tokenizer.eos_token == "<|endoftext|>"


def test_corrupt_weights_are_a_user_error(tmp_path, tiny_lm_dir):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_lm_dir, bad)
    (bad / "model.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(UserError, match="could not load a causal LM from"):
        load_causal_lm(bad, device="cpu")


def test_no_false_indexing_alarm_on_long_texts(family_dir):
    # rlhf encodes whole texts, then cuts them to the context itself; transformers' "Token indices sequence
    # length is longer than the specified maximum ... will result in indexing errors" came with every run
    import logging

    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    root, verbosity = hf_logging.get_logger("transformers"), hf_logging.get_verbosity()
    root.addHandler(handler)
    hf_logging.set_verbosity_warning()  # other tests may have quietened transformers
    try:
        path = family_dir("gpt2", n_positions=32)
        for tokenizer, alarm in ((AutoTokenizer.from_pretrained(path), True), (load_tokenizer(path), False)):
            assert tokenizer.model_max_length == 32
            records.clear()
            assert len(tokenizer("tea and bread " * 40)["input_ids"]) > 32
            said = any("indexing errors" in r.getMessage() for r in records)
            assert said is alarm  # plain transformers does warn
    finally:
        root.removeHandler(handler)
        hf_logging.set_verbosity(verbosity)
