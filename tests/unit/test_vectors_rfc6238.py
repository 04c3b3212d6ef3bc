"""RFC 6238 Appendix B known answers, through pyotp and through Tandem's own TOTP path.

The RFC's SHA-1 vectors are 8 digits; Tandem accepts 6. A TOTP value is
``HOTP mod 10^digits``, so the 6-digit code of a step is the last six digits of the
8-digit one: the test checks both that ``code_at`` reproduces the RFC values and that
``check_totp`` accepts their 6-digit truncations at the RFC's own times.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pyotp
import pytest

from tandem.core import totp
from tandem.errors import TotpError, TotpReplayError

VECTORS = json.loads((Path(__file__).parents[1] / "vectors" / "rfc6238.json").read_text())
SEED_B32 = base64.b32encode(VECTORS["seed_ascii"].encode("ascii")).decode("ascii")
CASES = VECTORS["cases"]


def test_vector_file_is_the_rfc_table() -> None:
    assert "RFC 6238" in VECTORS["source"]
    assert VECTORS["step_seconds"] == totp.STEP_SECONDS
    assert [c["time"] for c in CASES] == [59, 1111111109, 1111111111, 1234567890, 2000000000, 20000000000]
    for case in CASES:
        assert int(case["step_hex"], 16) == case["time"] // 30


@pytest.mark.parametrize("case", CASES, ids=lambda c: str(c["time"]))
def test_pyotp_reproduces_rfc_value(case: dict[str, Any]) -> None:
    assert pyotp.TOTP(SEED_B32, digits=8).at(case["time"]) == case["totp"]


@pytest.mark.parametrize("case", CASES, ids=lambda c: str(c["time"]))
def test_code_at_reproduces_rfc_value(case: dict[str, Any]) -> None:
    step = case["time"] // totp.STEP_SECONDS
    assert totp.code_at(SEED_B32, step, digits=8) == case["totp"]
    assert totp.code_at(SEED_B32, step) == case["totp"][-6:]


@pytest.mark.parametrize("case", CASES, ids=lambda c: str(c["time"]))
def test_check_totp_accepts_six_digit_truncation_at_rfc_time(case: dict[str, Any]) -> None:
    now = case["time"]
    step, state = totp.check_totp(SEED_B32, case["totp"][-6:], now=now, state=totp.TotpState())
    assert step == now // totp.STEP_SECONDS
    assert state.last_step == step
    assert state.failures == 0
    # ...and exactly once.
    with pytest.raises(TotpReplayError):
        totp.check_totp(SEED_B32, case["totp"][-6:], now=now, state=state)


@pytest.mark.parametrize("case", CASES, ids=lambda c: str(c["time"]))
def test_check_totp_refuses_eight_digit_form(case: dict[str, Any]) -> None:
    with pytest.raises(TotpError) as err:
        totp.check_totp(SEED_B32, case["totp"], now=case["time"], state=totp.TotpState())
    assert err.value.code == "totp_invalid"


def test_rfc_code_refused_far_from_its_time() -> None:
    case = CASES[1]
    with pytest.raises(TotpError) as err:
        totp.check_totp(SEED_B32, case["totp"][-6:], now=case["time"] + 10 * 60, state=totp.TotpState())
    assert err.value.code == "totp_invalid"
