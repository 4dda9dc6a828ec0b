"""One URL parser, one address rule and one deadline for everything the pack reaches on a user's word: image
fetches (imageio/fetch.py) and the endpoint's webhook and upload targets (server/delivery.py)."""

import asyncio
import socket
import time

import pytest

from imageinference.engines.imageio.fetch import FetchError, fetch_bytes, is_public_address
from imageinference.engines.imageio.limits import Limits
from imageinference.server.config import EndpointConfig
from imageinference.server.delivery import DeliveryError, check_target, send_once, url_problem


@pytest.mark.parametrize("ip", ["::a9fe:a9fe", "::7f00:1", "::a00:1",  # IPv4-compatible: 169.254.169.254, 127.0.0.1, 10.0.0.1
                                "64:ff9b:1::808:808", "64:ff9b:1::a9fe:a9fe",  # local-use NAT64 (RFC 8215)
                                "::ffff:0:a9fe:a9fe",  # SIIT-translated 169.254.169.254
                                "64:ff9b::a9fe:a9fe", "::ffff:169.254.169.254", "::1", "::"])
def test_ipv6_forms_of_inner_addresses_are_not_public(ip):
    assert not is_public_address(ip)


@pytest.mark.parametrize("ip", ["8.8.8.8", "2606:4700:4700::1111", "::808:808", "64:ff9b::808:808"])
def test_public_addresses_stay_public(ip):
    assert is_public_address(ip)


@pytest.mark.parametrize("url", ["http://[::a9fe:a9fe]/latest/meta-data", "http://[64:ff9b:1::a9fe:a9fe]/x.png"])
def test_fetches_and_webhooks_refuse_the_same_inner_addresses(url):
    with pytest.raises(FetchError, match="refusing"):
        fetch_bytes(url, Limits())
    with pytest.raises(DeliveryError, match="refusing") as info:
        asyncio.run(check_target(url, allow_private=False))
    assert info.value.permanent


@pytest.mark.parametrize("url", ["ftp://h.example/x.png", "http://h .example/x.png", "http://h.example:99999/x",
                                 "https:///x.png", "http://h.example/" + "a" * 9000, "javascript:alert(1)"])
def test_one_parser_refuses_the_same_urls_for_fetches_and_webhooks(url):
    assert url_problem(url) is not None
    with pytest.raises(FetchError):
        fetch_bytes(url, Limits(allow_private_urls=True))


@pytest.mark.parametrize("value, allowed", [("1", True), ("true", True), (" TRUE ", True), ("on", True),
                                            ("yes", True), ("0", False), ("", False), ("no", False)])
def test_the_private_urls_switch_is_read_one_way(monkeypatch, value, allowed):
    monkeypatch.setenv("IMAGEINFERENCE_ALLOW_PRIVATE_URLS", value)
    assert Limits.from_env().allow_private_urls is allowed
    assert EndpointConfig.from_env().allow_private_targets is allowed


@pytest.fixture
def slow_dns(monkeypatch):
    """A resolver that takes 3 s for names under .slow.example (and answers a public address)."""
    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        if str(host).endswith(".slow.example"):
            time.sleep(3)
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", 80))]
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def test_a_slow_dns_lookup_cannot_outlast_the_fetch_deadline(slow_dns):
    started = time.monotonic()
    with pytest.raises(FetchError, match="took longer than 0.5 s"):
        fetch_bytes("http://images.slow.example/a.png", Limits(fetch_deadline_s=0.5))
    assert time.monotonic() - started < 1.5  # the lookup alone takes 3 s


def test_a_slow_dns_lookup_cannot_outlast_a_webhook_attempt(slow_dns):
    async def attempt():
        started = time.monotonic()
        with pytest.raises(DeliveryError) as info:
            await send_once("POST", "http://hooks.slow.example/h", b"{}", "application/json", 0.5, False)
        return time.monotonic() - started, info.value

    elapsed, error = asyncio.run(attempt())
    assert elapsed < 1.5 and "took longer than 0.5 s" in str(error)
    assert not error.permanent  # a slow resolver may answer next time: retried
