"""Standard Webhooks signatures (https://www.standardwebhooks.com) with a per-tenant secret.

The tenant's stored secret is random text; what a tenant is given (and verifies with) is its
Standard Webhooks form, `whsec_` + base64 of those bytes.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime

from standardwebhooks import Webhook


def public_secret(stored: str) -> str:
    """The `whsec_...` secret a receiver passes to a Standard Webhooks library."""
    return "whsec_" + base64.b64encode(stored.encode()).decode()


def signed_headers(stored_secret: str, msg_id: str, body: str, now: datetime | None = None) -> dict[str, str]:
    """`webhook-id`, `webhook-timestamp` and `webhook-signature` for one delivery attempt."""
    ts = (now or datetime.now(UTC)).replace(microsecond=0)
    signature = Webhook(stored_secret.encode()).sign(msg_id, ts, body)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(ts.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
        "user-agent": "diffusiond-webhooks/1",
    }
