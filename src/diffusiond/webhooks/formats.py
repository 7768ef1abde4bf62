"""Webhook envelopes: the body as rendered (`standard`), or wrapped in an SNS notification (`sns`).

An SNS HTTP(S) subscription receives `{"Type": "Notification", "MessageId", "TopicArn", "Message":
<the body as a string>, "Timestamp", ...}` with `x-amz-sns-message-type: Notification`; clients
written for a queue API that announces completion through SNS (the EKS solution) read it that way.
The `Signature` fields are empty: only AWS can sign as SNS. Every delivery also carries the Standard
Webhooks signature headers, which is what a receiver should verify.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

FORMATS = ("standard", "sns")
TOPIC_ARN = "arn:aws:sns:local:000000000000:diffusiond-notifications"


def wrap(format: str, msg_id: str, body: str, now: datetime | None = None) -> tuple[str, dict[str, str]]:
    """The body to send and the extra headers, for one delivery of `body` in `format`."""
    if format != "sns":
        return body, {}
    stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    envelope = {
        "Type": "Notification", "MessageId": msg_id, "TopicArn": TOPIC_ARN, "Message": body, "Timestamp": stamp,
        "SignatureVersion": "1", "Signature": "", "SigningCertURL": "", "UnsubscribeURL": "",
    }
    headers = {"x-amz-sns-message-type": "Notification", "x-amz-sns-message-id": msg_id,
               "x-amz-sns-topic-arn": TOPIC_ARN, "content-type": "text/plain; charset=UTF-8"}
    return json.dumps(envelope), headers
