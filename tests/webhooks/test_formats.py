from __future__ import annotations

import json
from datetime import UTC, datetime

from diffusiond.webhooks.formats import wrap


def test_standard_is_the_body_and_sns_wraps_it() -> None:
    assert wrap("standard", "m1", '{"id": "a"}') == ('{"id": "a"}', {})
    body, headers = wrap("sns", "m1", '{"id": "a"}', now=datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC))
    envelope = json.loads(body)
    assert envelope["Type"] == "Notification" and envelope["MessageId"] == "m1"
    assert json.loads(envelope["Message"]) == {"id": "a"} and envelope["Timestamp"] == "2026-01-02T03:04:05.678Z"
    assert headers["x-amz-sns-message-type"] == "Notification" and headers["x-amz-sns-topic-arn"]
