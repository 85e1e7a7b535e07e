"""Server-side request forgery against `web.fetch`, tried the way an attacker would.

Internal addresses are refused whether written literally, hidden inside an IPv6 address
(mapped, 6to4, NAT64, IPv4-compatible), returned among public answers by DNS, or reached
through a redirect; `agents.web_allow` is the only way in. Names resolve through a fake
resolver (`trio.socket.set_custom_hostname_resolver`) and the only server is on
loopback: nothing here leaves the machine. Every fetch is bounded by `fail_after`.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import httpx
import pytest
import trio

from agents.errors import AddressRefused
from agents.offline._http import ConnectionCounts, HttpRequest, HttpResponse, serve_http
from agents.tools import AgentContext, AgentSettings
from agents.tools._web import AddressPolicy, WebAgent, _embedded_ipv4

TIMEOUT_S = 10


class Site:
    """A loopback site whose /to-<name> paths redirect to `redirects[name]`."""

    def __init__(self) -> None:
        self.port = 0
        self.requests: list[HttpRequest] = []
        self.redirects: dict[str, str] = {}

    async def handle(self, request: HttpRequest) -> HttpResponse:
        self.requests.append(request)
        target = self.redirects.get(request.path.removeprefix("/to-"))
        if target is not None:
            return HttpResponse(302, (("location", target),))
        return HttpResponse(200, (("content-type", "text/plain"),), b"loopback page")


class FakeResolver(trio.abc.HostnameResolver):
    """Answers names from a table, one list of addresses per lookup, counting lookups."""

    def __init__(self, answers: Mapping[str, Sequence[Sequence[str]]]) -> None:
        self.answers = answers
        self.lookups: list[str] = []

    async def getaddrinfo(
        self,
        host: bytes | None,
        port: bytes | str | int | None,
        family: int = 0,
        type: int = 0,
        proto: int = 0,
        flags: int = 0,
    ) -> list[tuple[Any, ...]]:
        name = (host or b"").decode()
        self.lookups.append(name)
        rounds = self.answers.get(name)
        if not rounds:
            raise socket.gaierror(socket.EAI_NONAME, "unknown name")
        addresses = rounds[min(len(self.lookups), len(rounds)) - 1]
        return [_info(address, int(port or 0)) for address in addresses]

    async def getnameinfo(self, sockaddr: tuple[str, int], flags: int) -> tuple[str, str]:
        raise NotImplementedError


def _info(address: str, port: int) -> tuple[Any, ...]:
    if ipaddress.ip_address(address).version == 4:
        return (socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))
    return (socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, port, 0, 0))


@pytest.fixture
async def site(nursery: trio.Nursery) -> Site:
    site = Site()
    site.port = await nursery.start(serve_http, site.handle, "127.0.0.1", 0, ConnectionCounts())
    return site


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def resolving(answers: Mapping[str, Sequence[Sequence[str]]]) -> FakeResolver:
    resolver = FakeResolver(answers)
    trio.socket.set_custom_hostname_resolver(resolver)
    return resolver


async def fetch(http: httpx.AsyncClient, url: str, **settings: Any) -> dict[str, Any]:
    agent = WebAgent(AgentContext(settings=AgentSettings(**settings), http=http))
    with trio.fail_after(TIMEOUT_S):
        result: dict[str, Any] = await agent.tools()["fetch"].call({"url": url})
    return result


def check(address: str, allow: Sequence[str] = ()) -> None:
    AddressPolicy(allow).check("target.test", [ipaddress.ip_address(address)])


# --- the policy: only global addresses ---------------------------------------------


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        pytest.param("100.100.100.200", "non-global", id="alibaba-metadata"),
        pytest.param("100.64.0.1", "non-global", id="shared-cgnat"),
        pytest.param("169.254.169.254", "link-local", id="aws-gcp-azure-metadata"),
        pytest.param("0.0.0.0", "unspecified", id="ipv4-unspecified"),
        pytest.param("::", "unspecified", id="ipv6-unspecified"),
        pytest.param("127.0.0.1", "loopback", id="ipv4-loopback"),
        pytest.param("::1", "loopback", id="ipv6-loopback"),
        pytest.param("10.0.0.1", "private", id="rfc1918"),
        pytest.param("fc00::1", "private", id="unique-local"),
        pytest.param("fe80::1", "link-local", id="ipv6-link-local"),
        pytest.param("192.0.0.1", "private", id="ietf-protocol-assignments"),
        pytest.param("192.0.0.8", "non-global", id="ietf-assignment-global-on-py311"),
        pytest.param("224.0.0.1", "multicast", id="ipv4-multicast"),
        pytest.param("ff0e::1", "multicast", id="ipv6-global-multicast"),
        pytest.param("::ffff:127.0.0.1", "loopback", id="ipv4-mapped-loopback"),
        pytest.param("::ffff:169.254.169.254", "link-local", id="ipv4-mapped-metadata"),
        pytest.param("2002:7f00:1::1", "carries 127.0.0.1", id="6to4-of-loopback"),
        pytest.param("2002:6464:64c8::1", "carries 100.100.100.200", id="6to4-of-alibaba"),
        pytest.param("64:ff9b::a9fe:a9fe", "carries 169.254.169.254", id="nat64-of-metadata"),
        pytest.param("::7f00:1", "carries 127.0.0.1", id="ipv4-compatible-loopback"),
        pytest.param("2001:0:4136:e378:8000:63bf:3fff:fdd2", "private", id="teredo"),
    ],
)
def test_policy_refuses_every_non_global_address(address: str, reason: str) -> None:
    with pytest.raises(AddressRefused, match=re.escape(reason)):
        check(address)


@pytest.mark.parametrize(
    "address",
    [
        pytest.param("93.184.216.34", id="ipv4"),
        pytest.param("2606:4700:4700::1111", id="ipv6"),
        pytest.param("2002:5db8:d822::1", id="6to4-of-a-global-ipv4"),
    ],
)
def test_policy_accepts_global_addresses(address: str) -> None:
    check(address)


def test_teredo_server_and_client_addresses_are_both_checked() -> None:
    """Teredo is not global anyway; its carried IPv4 addresses are checked as well."""
    teredo = ipaddress.IPv6Address("2001:0:5db8:d822:0:ffff:80ff:fffe")  # client 127.0.0.1
    carried = [str(a) for a in _embedded_ipv4(teredo)]
    assert carried == ["93.184.216.34", "127.0.0.1"]
    with pytest.raises(AddressRefused):
        check(str(teredo))


def test_web_allow_does_not_admit_an_address_tunnelled_to_an_allowed_one() -> None:
    check("::ffff:127.0.0.1", allow=["127.0.0.1"])  # it is 127.0.0.1 on the wire
    with pytest.raises(AddressRefused, match=re.escape("carries 127.0.0.1")):
        check("2002:7f00:1::1", allow=["127.0.0.1"])


def test_web_allow_admits_a_network_and_only_that_network() -> None:
    check("100.100.100.200", allow=["100.64.0.0/10"])
    with pytest.raises(AddressRefused, match=r"169\.254\.169\.254"):
        check("169.254.169.254", allow=["100.64.0.0/10"])


def test_one_internal_answer_among_global_ones_refuses_the_host() -> None:
    addresses = [ipaddress.ip_address(a) for a in ("93.184.216.34", "2002:7f00:1::1")]
    with pytest.raises(AddressRefused, match="2002:7f00:1::1"):
        AddressPolicy().check("mixed.test", addresses)


# --- fetching: every answer, every hop, the address actually connected ---------------


async def test_loopback_is_refused_until_web_allow_admits_it(
    site: Site, http: httpx.AsyncClient
) -> None:
    url = f"http://127.0.0.1:{site.port}/page"
    with pytest.raises(AddressRefused, match="loopback"):
        await fetch(http, url)
    assert site.requests == []
    page = await fetch(http, url, web_allow=["127.0.0.1"])
    assert page["text"] == "loopback page"
    assert [r.path for r in site.requests] == ["/page"]


@pytest.mark.parametrize(
    ("answers", "allow"),
    [
        pytest.param(["93.184.216.34", "10.0.0.1"], [], id="global-then-private"),
        pytest.param(["127.0.0.1", "100.100.100.200"], ["127.0.0.1"], id="allowed-then-alibaba"),
    ],
)
async def test_every_dns_answer_is_checked_not_just_the_first(
    site: Site, http: httpx.AsyncClient, answers: list[str], allow: list[str]
) -> None:
    """Refused before any connection (so the global answer is never contacted)."""
    resolving({"mixed.test": [answers]})
    with pytest.raises(AddressRefused):
        await fetch(http, f"http://mixed.test:{site.port}/page", web_allow=allow)
    assert site.requests == []


async def test_connection_goes_to_the_checked_address_without_a_second_lookup(
    site: Site, http: httpx.AsyncClient
) -> None:
    """DNS rebinding: the name would resolve elsewhere next time; it is never asked."""
    resolver = resolving({"rebind.test": [["127.0.0.1"], ["10.0.0.1"]]})
    page = await fetch(http, f"http://rebind.test:{site.port}/page", web_allow=["127.0.0.1"])
    assert page["text"] == "loopback page"
    assert resolver.lookups == ["rebind.test"]
    assert site.requests[0].headers["host"] == f"rebind.test:{site.port}"


@pytest.mark.parametrize(
    "target",
    [
        pytest.param("http://100.100.100.200/latest/meta-data", id="alibaba-metadata"),
        pytest.param("http://169.254.169.254/latest/meta-data", id="aws-metadata"),
        pytest.param("http://[2002:7f00:1::1]/", id="6to4-of-loopback"),
        pytest.param("http://[::ffff:127.0.0.2]/", id="ipv4-mapped-loopback"),
        pytest.param("http://0.0.0.0/", id="unspecified"),
        pytest.param("http://[::]/", id="ipv6-unspecified"),
        pytest.param("http://metadata.test/", id="name-resolving-to-metadata"),
    ],
)
async def test_every_redirect_hop_is_checked(
    site: Site, http: httpx.AsyncClient, target: str
) -> None:
    resolving({"metadata.test": [["100.100.100.200"]]})
    site.redirects["internal"] = target
    with pytest.raises(AddressRefused):
        await fetch(http, f"http://127.0.0.1:{site.port}/to-internal", web_allow=["127.0.0.1"])
    assert [r.path for r in site.requests] == ["/to-internal"]
