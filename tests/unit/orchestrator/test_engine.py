"""The engine's pure decisions: backoff, retries, matching, transitions."""

from __future__ import annotations

import random

import pytest

from orchestrator.engine import matching, retries, transitions
from orchestrator.engine.model import RunState


@pytest.mark.parametrize(("attempt", "base"), [(0, 1_000), (1, 2_000), (3, 8_000), (10, 1_024_000)])
def test_backoff_doubles_from_one_second_with_twenty_percent_jitter(attempt: int, base: int) -> None:
    rng = random.Random(1)
    delays = [retries.backoff_ms(attempt, rng=rng) for _ in range(200)]
    assert all(0.8 * base <= d <= 1.2 * base for d in delays)
    assert max(delays) - min(delays) > 0.2 * base  # jitter actually spreads them


def test_backoff_is_capped_at_one_hour() -> None:
    assert retries.backoff_ms(12, rng=random.Random(1)) <= 3_600_000
    assert min(retries.backoff_ms(40, rng=random.Random(s)) for s in range(20)) == 3_600_000


def test_backoff_rejects_negative_attempts() -> None:
    with pytest.raises(ValueError):
        retries.backoff_ms(-1)


def test_retry_decisions() -> None:
    rng = random.Random(3)
    assert retries.decide_retry(failed_attempts=1, retries=4, retriable=True, rng=rng).retry
    assert retries.decide_retry(failed_attempts=4, retries=4, retriable=True, rng=rng).retry
    assert not retries.decide_retry(failed_attempts=5, retries=4, retriable=True).retry
    assert not retries.decide_retry(failed_attempts=1, retries=4, retriable=False).retry
    assert not retries.decide_retry(failed_attempts=1, retries=0, retriable=True).retry
    after = retries.decide_retry(failed_attempts=1, retries=4, retriable=True, retry_after_ms=250)
    assert after == retries.RetryDecision(retry=True, delay_ms=250)
    third = retries.decide_retry(failed_attempts=3, retries=4, retriable=True, rng=rng)
    assert 3_200 <= third.delay_ms <= 4_800


def test_canonical_json_is_order_and_number_form_independent() -> None:
    assert matching.canonical_json({"b": 1, "a": [1.0, "x"]}) == '{"a":[1,"x"],"b":1}'
    assert matching.canonical_json(1.5) == "1.5"
    assert matching.canonical_json(True) == "true" != matching.canonical_json(1)
    assert matching.canonical_json("é") == '"é"'


def test_extract_follows_dotted_paths() -> None:
    event = matching.event_object("id1", "a/b", '{"upload_id": "u1", "items": [{"k": 2}]}', 5)
    assert matching.extract(event, "data.upload_id") == "u1"
    assert matching.extract(event, "data.items.0.k") == 2
    assert matching.extract(event, "name") == "a/b"
    assert matching.extract(event, "data.nope") is matching.MISSING
    assert matching.extract(event, "data.upload_id.deeper") is matching.MISSING
    assert matching.extract(event, "data.items.9") is matching.MISSING
    assert matching.match_value(event, "data.upload_id") == '"u1"'
    assert matching.match_value(event, "") == matching.ANY_VALUE
    assert matching.match_value(event, "data.nope") is None


def test_paths_and_json_validation() -> None:
    assert matching.is_valid_path("data.upload_id") and matching.is_valid_path("")
    assert not matching.is_valid_path("data..x") and not matching.is_valid_path(".x")
    with pytest.raises(ValueError):
        matching.parse_json("NaN")
    with pytest.raises(ValueError):
        matching.parse_json("{")
    assert matching.normalize_output('{"a":1}') == '{"a": 1}'


def test_event_output_is_the_event_object() -> None:
    text = matching.event_output_json("e", "n", '{"x": 1}', 7)
    assert text == '{"id": "e", "name": "n", "data": {"x": 1}, "ts": 7}'


def test_transitions_table() -> None:
    assert transitions.require(RunState.READY, RunState.LEASED)
    assert transitions.require(RunState.PARKED, RunState.READY)
    with pytest.raises(transitions.IllegalTransition):
        transitions.require(RunState.ENDED, RunState.READY)
    with pytest.raises(transitions.IllegalTransition):
        transitions.require(RunState.READY, RunState.PARKED)
    assert transitions.can_cancel(RunState.PARKED) and not transitions.can_cancel(RunState.ENDED)
