"""scripts/gpu_check.py's summary of the GPU check's runs (the runs themselves need a GPU: docs/parallel.md)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_run(runs: Path, name: str, status: str, rows: list[dict]) -> None:
    (runs / name / "logs").mkdir(parents=True)
    (runs / name / "status").write_text(status + "\n")
    (runs / name / "logs" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_summary_takes_the_median_rate_after_the_first_step_and_counts_failures(tmp_path, capsys):
    gpu_check = load_script()
    runs = tmp_path / "runs"
    common = {"memory/peak_rss_mib": 900.4, "parallel/local_parameters": 5.0, "parallel/parameters": 10.0}
    rates = [10.0, 2.0, 6.0, 4.0]  # the first (start-up) is left out: median of 2, 6, 4 = 4
    write_run(runs, "reward_fsdp2", "ok", [{"time/pairs_per_s": r, **common} for r in rates])
    grpo = [{"time/episodes_per_s": 3.0, "memory/peak_allocated_gib": 7.5, **common}]  # one step: itself
    write_run(runs, "grpo_zero3", "ok", [{"eval/loss": 1.0}, *grpo])
    write_run(runs, "dpo_zero3", "failed (rc 1)", [])
    assert gpu_check.summarise(runs, tmp_path / "out.json") == 1
    saved = json.loads((tmp_path / "out.json").read_text())
    rows = {(r["trainer"], r["config"]): r for r in saved["runs"]}
    assert saved["ratios"] == []  # no vLLM case ran
    assert rows["reward", "fsdp2"]["rate"] == 4.0 and rows["reward", "fsdp2"]["unit"] == "pairs_per_s"
    assert rows["reward", "fsdp2"]["peak_rss_mib"] == 900 and rows["reward", "fsdp2"]["local_parameters"] == 5
    assert rows["grpo", "zero3"]["rate"] == 3.0 and rows["grpo", "zero3"]["peak_allocated_gib"] == 7.5
    assert rows["dpo", "zero3"] == {"trainer": "dpo", "config": "zero3", "status": "failed (rc 1)"}
    assert "failed (rc 1)" in capsys.readouterr().out


def test_summary_compares_the_vllm_case_and_a_skipped_run_is_no_failure(tmp_path, capsys):
    gpu_check = load_script()
    runs = tmp_path / "runs"
    common = {"memory/peak_rss_mib": 1.0, "parallel/local_parameters": 1.0, "parallel/parameters": 1.0}
    for name, rates in (("grpo_vllm", [1.0, 39.0]), ("grpo_single", [1.0, 13.0]), ("trl_vllm", [1.0, 30.0])):
        write_run(runs, name, "ok", [{"time/episodes_per_s": r, **common} for r in rates])
    (runs / "dpo_fsdp2").mkdir()
    (runs / "dpo_fsdp2" / "status").write_text("skipped (no trl)\n")
    assert gpu_check.summarise(runs, tmp_path / "out.json") == 0
    ratios = json.loads((tmp_path / "out.json").read_text())["ratios"]
    # 39 / 30 = 1.3 (the goal, met); 39 / 13 = 3
    assert ratios == [
        {"what": "rlhf GRPO with vLLM / TRL GRPOTrainer with vLLM", "ratio": 1.3, "goal": 1.3},
        {"what": "rlhf GRPO with vLLM / with our sampler", "ratio": 3.0, "goal": None},
    ]
    assert "1.30x (goal 1.3x: met)" in capsys.readouterr().out
