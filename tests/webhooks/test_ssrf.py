"""Which notify URLs may be called: public only, unless the operator allows more."""

from __future__ import annotations

import pytest

from diffusiond.domain.errors import InvalidParams
from diffusiond.webhooks.delivery import post
from diffusiond.webhooks.ssrf import UrlPolicy
from tests.webhooks.receiver import Receiver


@pytest.mark.parametrize("url", [
    "http://127.0.0.1/hook", "http://10.0.0.1/hook", "http://169.254.169.254/latest/meta-data/",
    "http://[::1]:8080/hook", "http://localhost/hook", "http://192.168.1.10/", "http://0.0.0.0/",
    "http://[::ffff:127.0.0.1]/", "http://100.64.0.1/", "http://[fd00::1]/", "ftp://example.com/",
    "http://user:pw@93.184.216.34/", "not a url",
])
def test_refused_by_default(url: str) -> None:
    with pytest.raises(InvalidParams) as e:
        UrlPolicy("").check(url)
    assert e.value.code == "invalid_notify_url"


def test_public_address_allowed_and_pinned() -> None:
    target = UrlPolicy("").check("https://93.184.216.34:8443/x?y=1")
    assert (target.host, target.port, target.path) == ("93.184.216.34", 8443, "/x?y=1")
    assert [str(ip) for ip in target.ips] == ["93.184.216.34"]


def test_operator_allow_list_by_cidr_and_host() -> None:
    assert UrlPolicy("127.0.0.0/8").check("http://127.0.0.1:9/").port == 9
    assert UrlPolicy("10.0.0.1").check("http://10.0.0.1/").host == "10.0.0.1"
    assert UrlPolicy("localhost").check("http://localhost/").host == "localhost"
    with pytest.raises(InvalidParams):
        UrlPolicy("127.0.0.0/8").check("http://10.0.0.1/")


def test_delivery_rechecks_and_refuses_redirect_to_a_private_host() -> None:
    receiver = Receiver(respond=lambda n: (307, {"location": "http://169.254.169.254/latest/meta-data/"})).start()
    try:
        outcome = post(UrlPolicy("127.0.0.1"), receiver.url + "/hook", "{}", {})
        assert not outcome.ok and outcome.error is not None and "169.254.169.254" in outcome.error
        assert len(receiver.snapshot()) == 1
        # The first hop itself is refused when the operator does not allow loopback.
        refused = post(UrlPolicy(""), receiver.url + "/hook", "{}", {})
        assert not refused.ok and len(receiver.snapshot()) == 1
    finally:
        receiver.stop()


def test_delivery_follows_redirect_to_an_allowed_host() -> None:
    final = Receiver().start()
    hop = Receiver(respond=lambda n: (307, {"location": final.url + "/final"})).start()
    try:
        outcome = post(UrlPolicy("127.0.0.1"), hop.url + "/start", '{"a": 1}', {"content-type": "application/json"})
        assert outcome.ok
        (got,) = final.snapshot()
        assert got.path == "/final" and got.json == {"a": 1}
        assert got.headers["host"] == final.url.removeprefix("http://")
    finally:
        hop.stop()
        final.stop()


def test_redirect_to_loopback_is_refused() -> None:
    """The operator allows one address (127.0.0.2); its redirect to 127.0.0.1 is not followed."""
    target = Receiver().start()
    hop = Receiver(host="127.0.0.2", respond=lambda n: (302, {"location": target.url + "/internal"})).start()
    try:
        outcome = post(UrlPolicy("127.0.0.2"), hop.url + "/hook", "{}", {})
        assert not outcome.ok and outcome.error is not None and "127.0.0.1" in outcome.error
        assert len(hop.snapshot()) == 1 and target.snapshot() == []
    finally:
        hop.stop()
        target.stop()
