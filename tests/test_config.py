"""Config: YAML loading, dotted overrides, unknown keys and wrong types rejected with the key named."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from rlhf.config import ConfigError, help_field, load_config, parse_override, to_yaml


@dataclass
class PPOSection:
    kl_coef: float = help_field(0.1, "KL penalty coefficient.")
    epochs: int = help_field(4, "Epochs per batch.")
    whiten: bool = help_field(True, "Whiten advantages.")
    stop: list[str] = help_field(["</s>"], "Stop strings.")
    critic: str | None = help_field(None, "Separate critic path.")

    def validate(self) -> None:
        if self.kl_coef < 0:
            raise ConfigError(f"ppo.kl_coef must be >= 0; got {self.kl_coef}")


@dataclass
class Root:
    ppo: PPOSection = field(default_factory=PPOSection)
    name: str = help_field("run", "Run name.")


def test_defaults_when_nothing_given():
    cfg = load_config(Root)
    assert cfg.ppo.kl_coef == 0.1 and cfg.ppo.epochs == 4 and cfg.ppo.stop == ["</s>"]


def test_yaml_then_overrides_in_order(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("ppo:\n  kl_coef: 0.2\n  epochs: 2\nname: exp\n")
    cfg = load_config(Root, path, ["ppo.kl_coef=0.05", "ppo.stop=[a, b]", "ppo.critic=models/critic"])
    assert cfg.ppo.kl_coef == 0.05  # --set wins over the file
    assert cfg.ppo.epochs == 2  # the file wins over the default
    assert cfg.ppo.stop == ["a", "b"]
    assert cfg.ppo.critic == "models/critic"
    assert cfg.name == "exp"
    assert cfg.ppo.whiten is True


def test_int_is_accepted_for_float_and_exponent_strings_parse():
    assert load_config(Root, None, ["ppo.kl_coef=1"]).ppo.kl_coef == 1.0
    assert load_config(Root, None, ["ppo.kl_coef=1e-3"]).ppo.kl_coef == pytest.approx(0.001)


def test_unknown_key_in_override_is_named_with_suggestion():
    with pytest.raises(
        ConfigError, match=r"unknown config key 'ppo.kl_coeff' \(in --set\); did you mean 'ppo.kl_coef'"
    ):
        load_config(Root, None, ["ppo.kl_coeff=0.1"])


def test_unknown_key_in_yaml_names_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("ppo:\n  epochz: 3\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'ppo.epochz' \(in .*c.yaml\)"):
        load_config(Root, path)


def test_unknown_section():
    with pytest.raises(ConfigError, match="unknown config key 'dpo'"):
        load_config(Root, None, ["dpo.beta=0.1"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("ppo.epochs=abc", r"config key 'ppo.epochs' \(from --set\) expects int, got 'abc'"),
        ("ppo.epochs=2.5", r"'ppo.epochs' .* expects int, got 2.5"),
        ("ppo.whiten=3", r"'ppo.whiten' .* expects bool, got 3"),
        ("ppo.kl_coef=[1]", r"'ppo.kl_coef' .* expects float"),
        ("ppo=3", r"'ppo' .* expects a section"),
    ],
)
def test_wrong_types_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(Root, None, [override])


def test_wrong_type_in_yaml_names_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("ppo:\n  epochs: many\n")
    with pytest.raises(ConfigError, match=r"'ppo.epochs' \(from .*c.yaml\) expects int, got 'many'"):
        load_config(Root, path)


def test_validate_runs_on_sections():
    with pytest.raises(ConfigError, match="ppo.kl_coef must be >= 0"):
        load_config(Root, None, ["ppo.kl_coef=-1"])


def test_bad_yaml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Root, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("ppo: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(Root, bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(Root, listy)


def test_override_syntax():
    assert parse_override("a.b=0.5") == ("a.b", 0.5)
    assert parse_override("a=hello world") == ("a", "hello world")
    assert parse_override("a=null") == ("a", None)
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_override("a.b")


@pytest.mark.parametrize(
    "text, fixed",
    [
        ("ppo.reward_weights={helpful:1.0}", "{helpful: 1.0}"),
        ("ppo.reward_weights={helpful: 1.0, harmless:-1}", "{harmless: -1}"),
        ("a.b=[{x:2}]", "{x: 2}"),
    ],
)
def test_glued_yaml_mapping_says_to_add_a_space(text, fixed):
    # YAML reads '{helpful:1.0}' as the key 'helpful:1.0' with no value; say so rather than "got None".
    with pytest.raises(ConfigError, match="space after the colon") as info:
        parse_override(text)
    assert fixed in str(info.value)
    assert parse_override("ppo.reward_weights={helpful: 1.0}") == ("ppo.reward_weights", {"helpful": 1.0})
    assert parse_override("a.url=http://x:80") == ("a.url", "http://x:80")  # a plain string keeps its colons


def test_yaml_round_trip(tmp_path):
    cfg = load_config(Root, None, ["ppo.kl_coef=0.3"])
    path = tmp_path / "saved.yaml"
    path.write_text(to_yaml(cfg))
    assert load_config(Root, path) == cfg


def test_root_config_has_component_sections():
    from rlhf.config_root import load_root_config

    cfg = load_root_config(None, ["world.steps=7", "run.device=cpu"])
    assert cfg.world.steps == 7 and cfg.run.device == "cpu"
    with pytest.raises(ConfigError, match="world.hidden_size .* divisible"):
        load_root_config(None, ["world.hidden_size=130"])


def test_yes_no_on_off_are_text_for_text_settings_and_booleans_for_boolean_ones(tmp_path):
    from rlhf.config_root import load_root_config

    # YAML 1.1 read `no` as False: `ppo.mixed_precision=no` (Accelerate's word) was refused as a bool
    cfg = load_root_config(None, ["ppo.mixed_precision=no", "run.tensorboard=off", "run.progress=Yes"])
    assert cfg.ppo.mixed_precision == "no" and cfg.run.tensorboard is False and cfg.run.progress is True
    path = tmp_path / "c.yaml"
    path.write_text("ppo:\n  mixed_precision: no\nrun:\n  tensorboard: no\n")
    cfg = load_root_config(str(path), [])
    assert cfg.ppo.mixed_precision == "no" and cfg.run.tensorboard is False
    with pytest.raises(
        ConfigError, match=r"config key 'run.tensorboard' \(from --set\) expects bool, got 'maybe'"
    ):
        load_root_config(None, ["run.tensorboard=maybe"])
