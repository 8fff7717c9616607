"""Atomic JSON writes that strict readers accept."""

from __future__ import annotations

import json
import math

import numpy as np

from rlhf.io import write_json


def test_write_json_turns_nan_and_infinities_into_null(tmp_path):
    # round.json once held `NaN` (Krippendorff's alpha of agreeing labellers): Python reads it, but jq,
    # browsers and JSON.parse refuse the whole file
    path = tmp_path / "round.json"
    write_json(
        path, {"alpha": float("nan"), "kl": [1.5, float("inf"), np.float64("-inf")], "n": 3, "ok": 0.25}
    )
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text, parse_constant=lambda c: math.nan) == {"alpha": None, "kl": [1.5, None, None],
                                                                    "n": 3, "ok": 0.25}  # fmt: skip
    assert [p.name for p in tmp_path.iterdir()] == ["round.json"]  # no temporary file left beside it
