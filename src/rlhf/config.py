"""Typed configuration: dataclasses per component, loaded from YAML and overridden with `--set a.b=value`.

Every component declares a dataclass whose fields carry a type, a default and a help line
(`field(metadata={"help": ...})`). `load_config` layers defaults < YAML file < `--set` overrides, checks
every key against the dataclass tree and every value against its declared type, then calls each
section's `validate()` if it has one. Errors name the dotted key and where the value came from.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from rlhf.errors import ConfigError, UserError
from rlhf.io import read_text

T = TypeVar("T")


def help_field(default: Any, help: str, **kwargs: Any) -> Any:
    """A dataclass field with a help string (mutable defaults go through `default_factory`)."""
    if isinstance(default, (list, dict, set)) or dataclasses.is_dataclass(default):
        value = default
        return field(default_factory=lambda: _copy(value), metadata={"help": help}, **kwargs)
    return field(default=default, metadata={"help": help}, **kwargs)


def _copy(value: Any) -> Any:
    import copy

    return copy.deepcopy(value)


# ----------------------------------------------------------------------------- sections shared by all


@dataclass
class RunConfig:
    """Where and how a run executes."""

    seed: int = help_field(0, "Random seed for Python, NumPy and torch.")
    device: str = help_field("auto", "Device: 'auto' (CUDA when present, else CPU), 'cpu', 'cuda', 'cuda:1'.")
    dtype: str = help_field(
        "auto",
        "Parameter dtype: 'auto' (bfloat16 on CUDA with bf16 support, else float32), 'float32', 'bfloat16', 'float16'.",
    )
    log_dir: str | None = help_field(
        None, "Directory for metrics.jsonl and TensorBoard events; default: <out>/logs."
    )
    tensorboard: bool = help_field(
        True, "Also write TensorBoard events (needs pip install -e '.[tensorboard]'; without it, one note)."
    )
    progress: bool = help_field(True, "Show progress bars (rate and ETA) on long loops.")

    def validate(self) -> None:
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ConfigError(
                f"run.dtype must be one of auto, float32, bfloat16, float16; got {self.dtype!r}"
            )
        if not (self.device in ("auto", "cpu", "mps") or self.device.startswith("cuda")):
            raise ConfigError(f"run.device must be 'auto', 'cpu', 'mps' or 'cuda[:N]'; got {self.device!r}")


# ----------------------------------------------------------------------------- loading


def load_config(cls: type[T], path: str | Path | None = None, overrides: Iterable[str] = ()) -> T:
    """Build `cls` from its defaults, then the YAML file at `path`, then `key.sub=value` overrides."""
    data: dict[str, Any] = {}
    sources: dict[str, str] = {}
    if path is not None:
        file_data = read_yaml_mapping(path)
        _check_keys(cls, file_data, prefix="", source=str(path))
        _deep_merge(data, file_data, sources, source=str(path), prefix="")
    for override in overrides:
        key, value = parse_override(override)
        _check_dotted_key(cls, key, source="--set")
        _set_dotted(data, key, value)
        sources[key] = "--set"
    cfg = from_dict(cls, data, sources=sources)
    validate_all(cfg)
    return cfg


class _Yaml12Loader(yaml.SafeLoader):
    """YAML with YAML 1.2's booleans: only true / false (any case). PyYAML's YAML 1.1 also reads yes, no,
    on and off as booleans, which turned `ppo.mixed_precision=no` (Accelerate's word) into False; a
    boolean setting still accepts them (`_convert`)."""


_Yaml12Loader.yaml_implicit_resolvers = {
    first: [r for r in resolvers if r[0] != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
YAML_WORDS = {"yes": True, "on": True, "no": False, "off": False}  # YAML 1.1 booleans, for bool settings


def load_yaml(text: str) -> Any:
    """`text` as YAML with YAML 1.2's booleans (`_Yaml12Loader`)."""
    return yaml.load(text, Loader=_Yaml12Loader)  # noqa: S506 -- a SafeLoader


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        text = read_text(path)  # a BOM is dropped; bytes that are not UTF-8 are named by line and column
    except UserError as exc:
        raise ConfigError(f"config file {exc}") from None
    try:
        loaded = load_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(
            f"config file {path}{where}: not valid YAML ({getattr(exc, 'problem', exc)})"
        ) from exc
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(
            f"config file {path}: expected a mapping of sections (e.g. 'run:'), got {type(loaded).__name__}"
        )
    return loaded


def parse_override(text: str) -> tuple[str, Any]:
    """Split `a.b=value`; the value is read as YAML so `0.05`, `true`, `[1, 2]` and `null` get their types."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key=value, e.g. --set run.seed=3")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {text!r}: empty key")
    return key, parse_value(raw, f"--set {text!r}", f"--set '{key}=")


def parse_value(raw: str, where: str, example_prefix: str = "") -> Any:
    """`raw` read as YAML (`0.05`, `true`, `[1, 2]`, `{helpful: 1.0}`, `null`); text that is not YAML stays
    text. A flow mapping written without the space after a colon (`{helpful:1.0}`, which YAML reads as
    the key 'helpful:1.0' with no value) is a ConfigError naming `where` with the corrected text."""
    try:
        value = load_yaml(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    glued = _glued_mapping_key(value)
    if glued is not None:
        name, rest = glued.split(":", 1)
        example = f"{example_prefix}{{{name}: {rest}}}'" if example_prefix else f"{{{name}: {rest}}}"
        raise ConfigError(
            f"{where}: YAML reads '{glued}' as one key with no value; put a space after the colon, e.g. {example}"
        )
    return value


def _glued_mapping_key(value: Any) -> str | None:
    """The first mapping key like 'a:1.0' with no value (YAML's reading of `{a:1.0}`), at any depth."""
    if isinstance(value, Mapping):
        for k, v in value.items():
            if isinstance(k, str) and ":" in k and v is None:
                return k
            found = _glued_mapping_key(v)
            if found is not None:
                return found
    elif isinstance(value, list):
        for item in value:
            found = _glued_mapping_key(item)
            if found is not None:
                return found
    return None


def from_dict(
    cls: type[T], data: Mapping[str, Any], prefix: str = "", sources: Mapping[str, str] | None = None
) -> T:
    """Instantiate dataclass `cls` from a mapping, converting and checking each value's declared type."""
    sources = sources or {}
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in names]
    if unknown:
        raise ConfigError(
            _unknown_key_message(
                prefix + str(unknown[0]), names, prefix, sources.get(prefix + str(unknown[0]))
            )
        )
    kwargs = {}
    for name in names:
        if name in data:
            key = prefix + name
            kwargs[name] = _convert(data[name], hints[name], key, sources)
    return cls(**kwargs)


def validate_all(cfg: Any) -> None:
    """Call `validate()` on `cfg` and every nested dataclass, innermost first."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            validate_all(value)
        elif isinstance(value, list):
            for item in value:
                if dataclasses.is_dataclass(item):
                    validate_all(item)
    if hasattr(cfg, "validate"):
        cfg.validate()


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def to_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=False)


def save_config(cfg: Any, directory: str | Path, name: str = "rlhf_config.yaml") -> Path:
    """Write the resolved config next to a checkpoint so the run can be reproduced."""
    path = Path(directory) / name
    path.write_text(to_yaml(cfg), encoding="utf-8")
    return path


def describe(cls: type, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted key, type, help) for every leaf field: what `rlhf config show --help-keys` prints."""
    rows = []
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            rows.extend(describe(tp, prefix + f.name + "."))
        else:
            rows.append((prefix + f.name, _type_name(tp), f.metadata.get("help", "")))
    return rows


# ----------------------------------------------------------------------------- internals


def _check_keys(cls: type, data: Mapping[str, Any], prefix: str, source: str) -> None:
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    for key, value in data.items():
        if key not in names:
            raise ConfigError(_unknown_key_message(prefix + str(key), names, prefix, source))
        if dataclasses.is_dataclass(hints[key]) and isinstance(value, Mapping):
            _check_keys(hints[key], value, prefix + key + ".", source)


def _check_dotted_key(cls: type, key: str, source: str) -> None:
    current: Any = cls
    walked = ""
    for part in key.split("."):
        if not dataclasses.is_dataclass(current):
            raise ConfigError(f"{source} {key}: '{walked.rstrip('.')}' is a value, not a section")
        names = {f.name for f in dataclasses.fields(current) if f.init}
        if part not in names:
            raise ConfigError(_unknown_key_message(walked + part, names, walked, source))
        current = get_type_hints(current)[part]
        walked += part + "."


# The names TRL (and transformers' TrainingArguments, peft) give settings we also have, for the "did you
# mean" of an unknown key: the first of ours that the section has; "run.seed" lives in another section.
TRL_KEYS: dict[str, tuple[str, ...]] = {
    "learning_rate": ("lr",),
    "per_device_train_batch_size": ("batch_size",),
    "train_batch_size": ("batch_size",),
    "gradient_accumulation_steps": ("grad_accum",),
    "num_train_epochs": ("epochs",),
    "lr_scheduler_type": ("lr_schedule",),
    "beta": ("beta", "kl_coef"),  # GRPO's beta is the KL coefficient
    "kl_coef": ("kl_coef", "beta"),
    "eval_steps": ("eval_every",),
    "save_steps": ("save_every",),
    "logging_steps": ("log_every",),
    "num_ppo_epochs": ("ppo_epochs",),
    "num_generations": ("samples_per_prompt",),
    "max_completion_length": ("max_new_tokens",),
    "response_length": ("max_new_tokens",),
    "epsilon": ("cliprange",),
    "model_name_or_path": ("model", "policy"),
    "sft_model_path": ("policy",),
    "reward_model_path": ("reward",),
    "bf16": ("mixed_precision",),  # bf16: true is mixed_precision: bf16
    "r": ("lora_r",),  # peft's LoraConfig
    "seed": ("seed", "run.seed"),
}


def _unknown_key_message(key: str, names: Iterable[str], prefix: str, source: str | None) -> str:
    where = f" (in {source})" if source else ""
    options = sorted(names)
    name = key[len(prefix) :]
    trl = [ours for ours in TRL_KEYS.get(name, ()) if ours in options or (prefix and ours.startswith("run."))]
    close = difflib.get_close_matches(name, options, n=1)
    if trl:
        target = trl[0] if "." in trl[0] else prefix + trl[0]
        hint = f"; did you mean '{target}' (TRL's {name})?"
    elif close:
        hint = f"; did you mean '{prefix}{close[0]}'?"
    else:
        hint = f"; known keys here: {', '.join(prefix + o for o in options)}"
    return f"unknown config key '{key}'{where}{hint}"


def _deep_merge(target: dict, new: Mapping, sources: dict[str, str], source: str, prefix: str) -> None:
    for key, value in new.items():
        if isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _deep_merge(target[key], value, sources, source, prefix + key + ".")
        else:
            target[key] = value
            sources[prefix + key] = source


def _set_dotted(data: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = value


def _convert(value: Any, tp: Any, key: str, sources: Mapping[str, str]) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key, sources)
            except ConfigError as exc:
                errors.append(exc)
        raise _type_error(key, tp, value, sources)
    if origin is Literal:
        if value in get_args(tp):
            return value
        choices = ", ".join(repr(a) for a in get_args(tp))
        raise ConfigError(
            f"config key '{key}'{_source(key, sources)} must be one of {choices}; got {value!r}"
        )
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise _type_error(key, tp, value, sources)
        return from_dict(tp, value, prefix=key + ".", sources=sources)
    if origin in (list, tuple):
        (item_tp, *_rest) = get_args(tp) or (Any,)
        if not isinstance(value, (list, tuple)):
            raise _type_error(key, tp, value, sources)
        items = [_convert(v, item_tp, f"{key}[{i}]", sources) for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        key_tp, val_tp = get_args(tp) or (Any, Any)
        if not isinstance(value, Mapping):
            raise _type_error(key, tp, value, sources)
        return {
            _convert(k, key_tp, key, sources): _convert(v, val_tp, f"{key}.{k}", sources)
            for k, v in value.items()
        }
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in YAML_WORDS:
            return YAML_WORDS[value.lower()]
        raise _type_error(key, tp, value, sources)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _type_error(key, tp, value, sources)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            # YAML 1.1 reads '1e-3' (no dot) as a string; accept it as the number it clearly is.
            try:
                return float(value)
            except ValueError:
                pass
        raise _type_error(key, tp, value, sources)
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise _type_error(key, tp, value, sources)
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise _type_error(key, tp, value, sources)


def _source(key: str, sources: Mapping[str, str]) -> str:
    base = key.split("[")[0]
    while base and base not in sources and "." in base:
        base = base.rsplit(".", 1)[0]
    src = sources.get(base)
    return f" (from {src})" if src else ""


def _type_error(key: str, tp: Any, value: Any, sources: Mapping[str, str]) -> ConfigError:
    return ConfigError(
        f"config key '{key}'{_source(key, sources)} expects {_type_name(tp)}, got {value!r} ({type(value).__name__})"
    )


def _type_name(tp: Any) -> str:
    if isinstance(tp, type) and not get_args(tp):
        return "a section" if dataclasses.is_dataclass(tp) else tp.__name__
    text = str(tp).replace("typing.", "")
    return text


__all__ = [
    "RunConfig",
    "help_field",
    "load_config",
    "from_dict",
    "parse_override",
    "parse_value",
    "read_yaml_mapping",
    "save_config",
    "to_dict",
    "to_yaml",
    "describe",
    "validate_all",
]
