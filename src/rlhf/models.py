"""Model I/O: load causal LMs and tokenizers from a local path or the local Hugging Face cache; save atomically.

No hub is contacted: a model id is looked up in the local cache only (`local_files_only=True`). Every
failure a user can cause (missing path, no tokenizer, no pad/EOS token) raises `UserError` with a message
naming the path and what was expected.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from rlhf.errors import UserError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "spiece.model")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' picks CUDA when present, else CPU; anything else is checked to exist."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(
            f"device {device!r} was asked for but CUDA is not available on this machine; use --set run.device=cpu"
        )
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise UserError(f"unknown device {device!r}: use 'auto', 'cpu' or 'cuda[:N]'") from exc


def resolve_dtype(dtype: str | torch.dtype = "auto", device: torch.device | None = None) -> torch.dtype:
    """'auto' is bfloat16 on a CUDA device that supports it, else float32 (CPU half precision is slow)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        if device is not None and device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if dtype not in DTYPES:
        raise UserError(f"unknown dtype {dtype!r}: use one of auto, {', '.join(DTYPES)}")
    return DTYPES[dtype]


def _looks_like_path(name: str) -> bool:
    # Hub ids are 'name' or 'org/name'; anything else is meant as a file system path.
    return not name or name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name


def absolute_model_path(name_or_path: str) -> str:
    """`name_or_path` as an absolute path when it names an existing local directory (so a run's saved
    config still finds its models from another working directory), else unchanged ('world', a model id
    in the cache, or empty)."""
    path = Path(name_or_path).expanduser() if name_or_path else None
    return os.path.abspath(path) if path is not None and path.is_dir() else name_or_path  # links kept


def resolve_model_path(name_or_path: str | Path, require_config: bool = True) -> Path:
    """A local directory (with a config.json unless `require_config=False`), or the snapshot of a model id
    in the local Hugging Face cache."""
    text = str(name_or_path)
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir():
            raise UserError(f"model path {path} is a file; expected a directory saved with save_pretrained")
        if require_config and not (path / "config.json").is_file():
            raise UserError(
                f"model directory {path} has no config.json; expected a directory saved with save_pretrained"
            )
        return path
    if _looks_like_path(text):
        raise UserError(f"model path {path} does not exist")
    snapshot = _cached_snapshot(text)
    if snapshot is None:
        raise UserError(
            f"model {text!r} is neither a local directory nor a model in the local Hugging Face cache "
            "(no hub is reachable from here: download it elsewhere or pass a local path)"
        )
    return snapshot


def _cached_snapshot(model_id: str) -> Path | None:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model_id, local_files_only=True))
    except Exception:  # noqa: BLE001 - any cache miss or bad id means "not in the cache"
        return None


def has_tokenizer_files(path: str | Path) -> bool:
    return any((Path(path) / name).is_file() for name in TOKENIZER_FILES)


_PAD_WARNED: set[str] = set()  # tokenizer paths whose missing pad token has been reported


def load_tokenizer(name_or_path: str | Path, padding_side: str = "left") -> Any:
    """Load a tokenizer; without a pad token, use EOS as pad (with a warning); without either, fail."""
    from transformers import AutoTokenizer

    path = resolve_model_path(name_or_path, require_config=False)
    if not has_tokenizer_files(path):
        raise UserError(
            f"no tokenizer in {path}: expected one of {', '.join(TOKENIZER_FILES)} "
            "(save it with tokenizer.save_pretrained, or pass the tokenizer path separately)"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - a corrupt or foreign tokenizer is a user-facing error
        raise UserError(f"could not load the tokenizer in {path}: {str(exc).splitlines()[0]}") from exc
    tokenizer.padding_side = padding_side
    # rlhf cuts every sequence to the model's context itself (rlhf.sequences), often after encoding whole
    # texts first; transformers' "Token indices sequence length is longer than ... will result in indexing
    # errors" would then be a false alarm on every run (it marks itself shown with this key)
    tokenizer.deprecation_warnings["sequence-length-is-longer-than-the-specified-maximum"] = True
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise UserError(
                f"the tokenizer in {path} has neither a pad token nor an EOS token; add one of them"
            )
        if str(path) not in _PAD_WARNED:  # once per path: a run loads the same tokenizer several times
            _PAD_WARNED.add(str(path))
            warnings.warn(
                f"tokenizer in {path} has no pad token; using its EOS token {tokenizer.eos_token!r} as pad",
                stacklevel=2,
            )
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(
    name_or_path: str | Path,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "auto",
    tokenizer_path: str | Path | None = None,
) -> tuple[Any, Any]:
    """Load `(model, tokenizer)`: `AutoModelForCausalLM` in eval mode on the resolved device and dtype."""
    from transformers import AutoModelForCausalLM

    path = resolve_model_path(name_or_path)
    tokenizer = load_tokenizer(tokenizer_path if tokenizer_path is not None else path)
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch_dtype, local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - a corrupt or foreign checkpoint is a user-facing error
        raise UserError(f"could not load a causal LM from {path}: {str(exc).splitlines()[0]}") from exc
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model.to(device).eval(), tokenizer


_SAVED_DROPOUT = "_rlhf_config_dropout"  # a module attribute: survives deepcopy, never saved in config.json


def _is_rate(name: str, value: Any) -> bool:
    return (
        ("dropout" in name or name.endswith("drop"))  # resid_pdrop, OPT's layerdrop
        and isinstance(value, float)
        and not isinstance(value, bool)
    )


def disable_dropout(model: torch.nn.Module) -> int:
    """Turn every dropout in `model` off, in train mode too, as TRL's `disable_dropout_in_model` does and
    further: `nn.Dropout` modules, the float rates transformers' modules keep as attributes and pass to
    `F.dropout` or the attention (`attention_dropout`, OPT's `dropout`, BLOOM's and Falcon's
    `hidden_dropout`...), and the config's rates, which some models read in `forward` (Falcon). Needed
    wherever a ratio or a difference to a reference is computed (PPO's ratio, DPO's and ILQL's
    log-ratios): with dropout on, policy = reference would not give ratio 1 or loss log 2.

    The config's own values are kept aside and written back by `save_pretrained_atomic`, so a saved
    model keeps the dropout it came with. Returns how many non-zero rates were turned off."""
    changed = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            changed += module.p > 0
            module.p = 0.0
        for name, value in list(vars(module).items()):
            if _is_rate(name, value):
                changed += value > 0
                setattr(module, name, 0.0)
    config = getattr(model, "config", None)
    if config is not None:
        saved = {k: v for k, v in vars(config).items() if _is_rate(k, v)}
        if saved:
            setattr(model, _SAVED_DROPOUT, {**saved, **getattr(model, _SAVED_DROPOUT, {})})
            for name in saved:
                changed += getattr(config, name) > 0
                setattr(config, name, 0.0)
    return changed


def count_parameters(model: torch.nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def parameter_counts(model: torch.nn.Module) -> tuple[int, int]:
    """(parameters this process holds, the model's total): equal unless the parameters are sharded --
    FSDP2 (DTensor parameters: a local shard of a global tensor) or DeepSpeed ZeRO-3 (`ds_tensor`, this
    rank's partition of `ds_numel`). Shared (tied) parameters count once."""
    # a DTensor exists only once its module is loaded; importing it here would cost every run ~0.3 s
    dtensor = getattr(sys.modules.get("torch.distributed.tensor"), "DTensor", ())
    local = total = 0
    for p in model.parameters():
        if hasattr(p, "ds_numel"):
            local, total = local + p.ds_tensor.numel(), total + p.ds_numel
        elif isinstance(p, dtensor):
            local, total = local + p.to_local().numel(), total + p.numel()
        else:
            local, total = local + p.numel(), total + p.numel()
    return local, total


def save_atomic(out_dir: str | Path, write: Callable[[Path], None], carry: tuple[str, ...] = ()) -> Path:
    """Run `write(tmp_dir)`, then swap `tmp_dir` into `out_dir`: a crash never leaves a half-written checkpoint.

    The previous contents of `out_dir`, if any, are kept until the new directory is in place. Entries
    named in `carry` (e.g. a run's `logs` and `checkpoint` folders) move from the old directory into the
    new one just before the swap, by rename.
    """
    out_dir = Path(out_dir).expanduser().resolve()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    moved: list[str] = []
    try:
        write(tmp_dir)
        if out_dir.exists():
            for name in carry:
                if (out_dir / name).exists() and not (tmp_dir / name).exists():
                    os.replace(out_dir / name, tmp_dir / name)
                    moved.append(name)
            old_dir = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
            os.replace(out_dir, old_dir)
            os.replace(tmp_dir, out_dir)
            shutil.rmtree(old_dir, ignore_errors=True)
        else:
            os.replace(tmp_dir, out_dir)
    except BaseException:
        for name in moved:  # give the carried entries back to the old directory
            if out_dir.exists() and (tmp_dir / name).exists():
                os.replace(tmp_dir / name, out_dir / name)
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    return out_dir


def save_pretrained_atomic(
    out_dir: str | Path,
    model: Any,
    tokenizer: Any | None = None,
    extra_files: dict[str, Callable[[Path], None]] | None = None,
    carry: tuple[str, ...] = (),
) -> Path:
    """`save_pretrained` for the model (and tokenizer) into `out_dir`, atomically; `extra_files` maps file
    names to callables `f(path)` that write additional files (configs, statistics) in the same swap."""

    def write(tmp: Path) -> None:
        saved = getattr(model, _SAVED_DROPOUT, {})  # the config's dropout as loaded (see disable_dropout)
        current = {name: getattr(model.config, name) for name in saved}
        try:
            for name, value in saved.items():
                setattr(model.config, name, value)
            model.save_pretrained(tmp)
        finally:
            for name, value in current.items():
                setattr(model.config, name, value)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        for name, writer in (extra_files or {}).items():
            writer(tmp / name)

    return save_atomic(out_dir, write, carry=carry)


# ----------------------------------------------------------------------------- freezing and LoRA


def transformer_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The stack of transformer blocks of a decoder backbone (Llama, Mistral, Qwen, GPT-2, GPT-NeoX, OPT...)."""
    for path in (
        "layers",
        "model.layers",
        "h",
        "transformer.h",
        "gpt_neox.layers",
        "decoder.layers",
        "model.decoder.layers",
    ):
        module: Any = model
        for part in path.split("."):
            module = getattr(module, part, None)
            if module is None:
                break
        if isinstance(module, torch.nn.ModuleList):
            return module
    raise UserError(f"cannot find the transformer layers of {type(model).__name__} to freeze")


def freeze_lower_layers(backbone: torch.nn.Module, n_trainable: int) -> int:
    """Freeze the embeddings and all but the top `n_trainable` blocks; returns how many blocks froze.

    Large-model RLHF trains only the top of the network when full fine-tuning is too costly (trlX's
    `num_layers_unfrozen`); the frozen part is then identical to the initial model's.
    """
    layers = transformer_layers(backbone)
    n_frozen = max(0, len(layers) - n_trainable)
    for layer in layers[:n_frozen]:
        layer.requires_grad_(False)
    embeddings = backbone.get_input_embeddings() if hasattr(backbone, "get_input_embeddings") else None
    if embeddings is not None and n_frozen > 0:
        embeddings.requires_grad_(False)
    return n_frozen


def add_lora(
    backbone: torch.nn.Module,
    r: int,
    alpha: float,
    dropout: float,
    target_modules: list[str] | str = "all-linear",
) -> torch.nn.Module:
    """Inject LoRA adapters (peft) into `backbone` in place and freeze everything else in it."""
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules)
    for param in backbone.parameters():
        param.requires_grad_(False)
    return inject_adapter_in_model(config, backbone)


def has_lora(module: torch.nn.Module) -> bool:
    return any("lora_" in name for name, _ in module.named_parameters())


def merge_lora(module: torch.nn.Module) -> int:
    """Merge every LoRA adapter into its base weight and put the plain layer back; returns the count."""
    from peft.tuners.lora import LoraLayer

    merged = 0
    for name, child in list(module.named_modules()):
        if isinstance(child, LoraLayer):
            child.merge()
            parent_name, _, attr = name.rpartition(".")
            parent = module.get_submodule(parent_name) if parent_name else module
            setattr(parent, attr, child.get_base_layer())
            merged += 1
    return merged


class AdaptersDisabled:
    """Call `model` with its LoRA adapters switched off: the frozen initial model, with no second copy.

    Used as the PPO reference when the policy trains LoRA adapters only."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model

    def __call__(self, **kwargs: Any) -> Any:
        from peft.tuners.lora import LoraLayer

        layers = [m for m in self.model.modules() if isinstance(m, LoraLayer)]
        for layer in layers:
            layer.enable_adapters(False)
        try:
            return self.model(**kwargs)
        finally:
            for layer in layers:
                layer.enable_adapters(True)


def merged_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of `model` with its LoRA adapters merged into the weights (the model itself keeps training)."""
    import copy

    if not has_lora(model):
        return model
    plain = copy.deepcopy(model)
    merge_lora(plain)
    return plain


def share_frozen_modules(policy: torch.nn.Module, reference: torch.nn.Module) -> int:
    """Point the reference's frozen lower blocks and embeddings at the policy's own; returns the
    number of parameters no longer held twice.

    With only the top N blocks trained (`freeze_lower_layers`) the lower ones stay identical to the
    initial model's, so the reference needs its own copy of the top N only (trlX's hydra heads).
    """
    shared = 0
    policy_layers, reference_layers = transformer_layers(policy), transformer_layers(reference)
    for i, layer in enumerate(policy_layers):
        if any(p.requires_grad for p in layer.parameters()):
            break  # frozen blocks are the lowest ones: everything from here up trains
        reference_layers[i] = layer
        shared += sum(p.numel() for p in layer.parameters())
    embeddings = policy.get_input_embeddings()
    tied = getattr(policy.config, "tie_word_embeddings", False)
    if shared and not tied and not any(p.requires_grad for p in embeddings.parameters()):
        reference.set_input_embeddings(embeddings)
        shared += sum(p.numel() for p in embeddings.parameters())
    return shared


class ValueModel(torch.nn.Module):
    """A separate critic: a copy of a causal LM's trunk (without its LM head) and a linear value head.

    The shared-trunk value head is cheaper; a separate critic keeps value-loss gradients out of the
    policy, which helps when the value loss is large early on (the OpenAI 2019 and TRL set-up).
    """

    def __init__(self, causal_lm: torch.nn.Module) -> None:
        import copy

        super().__init__()
        self.trunk = copy.deepcopy(getattr(causal_lm, causal_lm.base_model_prefix))
        self.trunk.requires_grad_(True)
        self.head = torch.nn.Linear(causal_lm.config.hidden_size, 1)
        torch.nn.init.zeros_(self.head.weight)
        torch.nn.init.zeros_(self.head.bias)

    def response_values(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_start: int
    ) -> torch.Tensor:
        """V(s_t) for every response token t, read at the position that emits it; (B, L) -> (B, T)."""
        from rlhf.logprobs import position_ids_from_mask

        position_ids = position_ids_from_mask(attention_mask)
        hidden = self.trunk(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
        ).last_hidden_state[:, response_start - 1 : -1]  # (B, T, D)
        return self.head(hidden.to(self.head.weight.dtype)).squeeze(-1)  # (B, T)
