"""Rated responses (multi-objective regression data) from HelpSteer rows: kept, masked or quarantined."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pyarrow as pa
import pytest

from rmcore.data.rated import rated_responses

SHARED_HELPSTEER = Path(__file__).parents[2] / "shared" / "data" / "nvidia" / "HelpSteer" / "train.jsonl"


def hs(prompt, response, h=3, c=3, coh=4, cx=2, v=1) -> dict:
    return {"prompt": prompt, "response": response, "helpfulness": h, "correctness": c, "coherence": coh,
            "complexity": cx, "verbosity": v}


ROWS = [
    hs("P1", "A"),  # 0 kept
    hs("P1", "B", h=None),  # 1 kept, helpfulness null (masked)
    hs("P2", "C", c=math.nan),  # 2 kept, correctness null
    hs("P2", ""),  # 3 quarantined: empty_response
    hs("P3", "D", v=5),  # 4 quarantined: rating_out_of_range: verbosity
    hs(None, "E"),  # 5 quarantined: missing_field: prompt
    hs("P4", "F", h=None, c=None, coh=None, cx=None, v=None),  # 6 quarantined: no_rating
]


def test_every_row_is_kept_with_masked_ratings_or_quarantined_by_name() -> None:
    result = rated_responses(pa.Table.from_pylist(ROWS))
    assert result.rows_in == 7 and result.responses.num_rows == 3 and result.quarantine.num_rows == 4
    assert result.responses.column("source_row").to_pylist() == [0, 1, 2]
    assert dict(zip(result.quarantine["source_row"].to_pylist(), result.quarantine["reason"].to_pylist())) == {
        3: "empty_response", 4: "rating_out_of_range: verbosity", 5: "missing_field: prompt", 6: "no_rating"}
    rows = result.responses.to_pylist()
    assert rows[1]["helpfulness"] is None and rows[1]["correctness"] == 3.0
    assert rows[2]["correctness"] is None
    assert rows[0]["conversation"] == [{"role": "user", "content": "P1"}, {"role": "assistant", "content": "A"}]
    assert result.missing_ratings == {"helpfulness": 1, "correctness": 1, "coherence": 0, "complexity": 0, "verbosity": 0}
    assert json.loads(result.quarantine["raw"].to_pylist()[1])["verbosity"] == 5


@pytest.mark.skipif(not SHARED_HELPSTEER.exists(), reason=f"{SHARED_HELPSTEER} absent (the shared real-data mirror)")
def test_real_helpsteer_sample_every_row_rated() -> None:
    raw = pa.Table.from_pylist([json.loads(line) for line in SHARED_HELPSTEER.read_text().splitlines()])
    result = rated_responses(raw)
    assert result.rows_in == 500 and result.responses.num_rows + result.quarantine.num_rows == 500
    assert result.quarantine.num_rows == 0 and set(result.missing_ratings.values()) == {0}
    assert len(set(result.responses.column("response_id").to_pylist())) == 500
