"""`rlhf world ...` commands end to end on a small world built in a temporary cache."""

from __future__ import annotations

import pytest
import yaml

from rlhf.cli import main
from rlhf.io import read_jsonl
from tests.world.test_build import SMALL


@pytest.fixture(scope="module")
def small_config(tmp_path_factory):
    root = tmp_path_factory.mktemp("world_cli")
    path = root / "small.yaml"
    path.write_text(
        yaml.safe_dump({"world": {**SMALL, "cache_dir": str(root / "cache")}, "run": {"progress": False}})
    )
    return path


def run(capsys, *args):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_build_then_reuse(capsys, small_config):
    code, out, _ = run(capsys, "world", "build", "--config", small_config)
    assert code == 0 and "held-out loss" in out
    code, out, _ = run(capsys, "world", "build", "--config", small_config)
    assert code == 0 and "re-used" in out


def test_sample_prints_gold_scores_and_writes_jsonl(capsys, small_config, tmp_path):
    out_file = tmp_path / "s.jsonl"
    code, out, err = run(
        capsys, "world", "sample", "--config", small_config, "--n", 6, "--seed", 2, "--jsonl", out_file
    )
    assert code == 0, err
    assert "mean helpfulness" in out
    rows = read_jsonl(out_file)
    assert len(rows) == 6
    assert {"prompt", "response", "kind", "helpfulness", "harm", "finished"} <= set(rows[0])
    assert all(0.0 <= r["harm"] <= 1.0 for r in rows)


def test_panel_prints_agreement(capsys):
    code, out, _ = run(
        capsys,
        "world",
        "panel",
        "--n-pairs",
        60,
        "--set",
        "panel.n_labellers=5",
        "--set",
        "panel.n_spammers=1",
    )
    assert code == 0 and "agreement with gold" in out and "majority" in out


def test_export_prompts_and_gold_pairs(capsys, tmp_path):
    code, _, _ = run(capsys, "world", "export", "prompts", "--n", 20, "--out", tmp_path / "p.jsonl")
    assert code == 0
    prompts = read_jsonl(tmp_path / "p.jsonl")
    assert len(prompts) == 20 and all(p["prompt"].startswith("User: ") for p in prompts)

    code, _, _ = run(capsys, "world", "export", "pairs", "--n", 30, "--out", tmp_path / "pairs.jsonl")
    assert code == 0
    pairs = read_jsonl(tmp_path / "pairs.jsonl")
    assert len(pairs) == 30
    for row in pairs:
        assert row["chosen"] != row["rejected"]
        assert row["chosen_utility"] > row["rejected_utility"]


def test_export_panel_pairs_carry_labeller_ids(capsys, tmp_path):
    code, _, _ = run(
        capsys, "world", "export", "pairs", "--judge", "panel", "--n", 40, "--out", tmp_path / "pp.jsonl"
    )
    assert code == 0
    rows = read_jsonl(tmp_path / "pp.jsonl")
    assert len(rows) == 40 and len({r["labeller_id"] for r in rows}) > 1


def test_export_model_responses(capsys, small_config, tmp_path):
    code, _, err = run(
        capsys,
        "world",
        "export",
        "responses",
        "--config",
        small_config,
        "--n",
        5,
        "--out",
        tmp_path / "r.jsonl",
    )
    assert code == 0, err
    from rlhf.world.build import WorldConfig, world_dir

    built = world_dir(
        WorldConfig(**SMALL, cache_dir=yaml.safe_load(small_config.read_text())["world"]["cache_dir"])
    )
    code, _, err = run(
        capsys, "world", "export", "responses", "--model", built, "--n", 5, "--out", tmp_path / "m.jsonl"
    )
    assert code == 0, err
    assert len(read_jsonl(tmp_path / "m.jsonl")) == 5


def test_export_bad_kind_is_one_line(capsys, tmp_path):
    code, _, err = run(capsys, "world", "export", "dialogs", "--out", tmp_path / "x.jsonl")
    assert code == 2 and "unknown export 'dialogs'" in err and "Traceback" not in err
    assert not (tmp_path / "x.jsonl").exists()


def test_export_harmless_pairs_from_the_cli(capsys, tmp_path):
    out = tmp_path / "harmless.jsonl"
    code, _, err = run(capsys, "world", "export", "pairs", "--objective", "harmless", "--n", 25, "--out", out)
    assert code == 0, err
    rows = read_jsonl(out)
    assert len(rows) == 25 and all(r["objective"] == "harmless" for r in rows)
    assert all(r["chosen_harm"] < r["rejected_harm"] for r in rows)
