"""Which webhook URLs may be called: public addresses only, unless the operator allows more.

A URL is checked when a job is submitted and again at every delivery (DNS may have changed). Every
address the host resolves to must be allowed; delivery then connects to the checked address itself
(see delivery.py), so a second, different DNS answer cannot slip in between check and connect.
`DIFFUSIOND_WEBHOOK_ALLOW_HOSTS` lists host names (matched exactly) and IPs or CIDRs (matched
against resolved addresses) that are allowed although not public.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from diffusiond.domain.errors import InvalidParams

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def refused(message: str) -> InvalidParams:
    return InvalidParams(f"notifyUrl: {message}", code="invalid_notify_url", field="notifyUrl")


@dataclass(frozen=True)
class Target:
    """A checked URL: where to connect (a pinned IP) and what to call it (Host, SNI)."""

    scheme: str
    host: str
    port: int
    path: str  # path and query
    ips: tuple[IpAddress, ...]


class UrlPolicy:
    def __init__(self, allow: str = "") -> None:
        hosts: set[str] = set()
        nets: list[IpNetwork] = []
        for item in (x.strip() for x in allow.split(",")):
            if not item:
                continue
            try:
                nets.append(ipaddress.ip_network(item.strip("[]"), strict=False))
            except ValueError:
                hosts.add(item.lower().rstrip("."))
        self.hosts = frozenset(hosts)
        self.nets = tuple(nets)

    def ip_allowed(self, ip: IpAddress) -> bool:
        if any(ip in net for net in self.nets):
            return True
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            return self.ip_allowed(ip.ipv4_mapped)
        return ip.is_global and not ip.is_multicast

    def check(self, url: str) -> Target:
        """Resolve and check `url`; raises `invalid_notify_url` when it may not be called."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise refused("not a valid URL") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise refused("must be an absolute http(s) URL")
        if parts.username or parts.password:
            raise refused("must not contain credentials")
        host = parts.hostname.lower().rstrip(".")
        port = port or (443 if parts.scheme == "https" else 80)
        ips = self.resolve(host, port)
        if host not in self.hosts:
            for ip in ips:
                if not self.ip_allowed(ip):
                    raise refused(f"{host} resolves to {ip}, a loopback, private, link-local or reserved "
                                  "address; set DIFFUSIOND_WEBHOOK_ALLOW_HOSTS to allow it")
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return Target(parts.scheme, host, port, path, ips)

    @staticmethod
    def resolve(host: str, port: int) -> tuple[IpAddress, ...]:
        try:
            return (ipaddress.ip_address(host),)
        except ValueError:
            pass
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            raise refused(f"cannot resolve host {host!r}") from None
        ips = tuple(dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos))
        if not ips:
            raise refused(f"cannot resolve host {host!r}")
        return ips
