"""Federation over HTTPS with certificate checks on, as between real deployments: each
server listens with a certificate from a test CA that the others trust through
`federation.ca_file`. Servers named "a.test" and "b.test" are found through SRV records
pointing at localhost (the test's DNS), so the name a server is reached by differs from
the name its certificate must carry: the certificate is checked against, and SNI carries,
the server name. A certificate for another name, or from a CA nobody trusts, is refused
with a clear error."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from federation.discovery import Resolver, SrvRecord, WellKnownResponse
from homeserver.api.context import HOMESERVER
from homeserver.app import server_tls_context
from homeserver.services.core.clock import now_ms
from homeserver.services.homeserver import Homeserver
from homeserver.services.remote.client import Unreachable
from tests.integration.conftest import RoomUser
from tests.integration.peers import free_port
from tests.integration.test_federation_rooms import eventually, membership, sees

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")

Client = TestClient[Any, Any]
VERSION_PATH = "/_matrix/federation/v1/version"


class TestCa:
    """A certificate authority made for one test, issuing server certificates."""

    __test__ = False  # not a test class, despite its name

    def __init__(self, directory: Path, name: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.cert = directory / "ca.pem"
        self.key = directory / "ca.key"
        _openssl(
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", self.key, "-out", self.cert, "-days", "2",
            "-subj", f"/CN={name}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        )  # fmt: skip

    def issue(self, dns_name: str) -> tuple[Path, Path]:
        """A server certificate for `dns_name` (subjectAltName) and its key."""
        stem = self.directory / dns_name
        key, csr, cert = (stem.with_suffix(s) for s in (".key", ".csr", ".pem"))
        extensions = stem.with_suffix(".ext")
        extensions.write_text(
            f"subjectAltName=DNS:{dns_name}\n"
            "basicConstraints=critical,CA:FALSE\n"
            "keyUsage=critical,digitalSignature\n"
            "extendedKeyUsage=serverAuth\n"
            "subjectKeyIdentifier=hash\n"
            "authorityKeyIdentifier=keyid\n"
        )
        _openssl(
            "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", key, "-out", csr, "-subj", f"/CN={dns_name}",
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", csr, "-CA", self.cert, "-CAkey", self.key,
            "-CAcreateserial", "-days", "1", "-extfile", extensions, "-out", cert,
        )  # fmt: skip
        return cert, key


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=30)


@dataclass
class TlsServer:
    """One of our servers: its client API over the test client, federation on its TLS
    listener; `sni` lists the names clients asked for in their TLS handshakes."""

    client: Client
    tls_port: int
    sni: list[str | None] = field(default_factory=list)

    @property
    def hs(self) -> Homeserver:
        return self.client.app[HOMESERVER]


class Network:
    """The servers of one test, and the SRV records of the names that have them."""

    def __init__(self, homeserver_client: Callable[..., Any], tmp: Path) -> None:
        self._start = homeserver_client
        self.ca = TestCa(tmp / "ca", "Federation Test CA")
        self.srv: dict[str, int] = {}

    async def server(self, name: str, *, cert_name: str, ca: TestCa | None = None) -> TlsServer:
        """A server named `name`, presenting a certificate for `cert_name` from `ca`
        (the trusted test CA by default) and trusting the test CA for its own requests.
        A name with a port is served on that port; one without gets an SRV record for its
        TLS listener on localhost."""
        host, _, explicit = name.partition(":")
        port = int(explicit) if explicit else free_port()
        if not explicit:
            self.srv[host] = port
        cert, key = (ca or self.ca).issue(cert_name)
        client: Client = await self._start(
            server_name=name,
            tls_port=port,
            tls_cert=str(cert),
            tls_key=str(key),
            **{
                "federation.use_tls": True,
                "federation.verify_tls": True,
                "federation.ca_file": str(self.ca.cert),
                "federation.ip_range_whitelist": ["127.0.0.0/8", "::1/128"],
                "rate_limits.enabled": False,
            },
        )
        server = TlsServer(client, port)
        context = server_tls_context(server.hs.config)
        context.sni_callback = lambda _sock, sni, _ctx: server.sni.append(sni)
        assert client.server.runner is not None
        site = web.TCPSite(client.server.runner, "127.0.0.1", port, ssl_context=context)
        await site.start()
        server.hs.remote_client.resolver = Resolver(_no_well_known, self._lookup_srv, now_ms)
        return server

    async def _lookup_srv(self, name: str) -> list[SrvRecord]:
        service, _, host = name.partition("._tcp.")
        if service != "_matrix-fed" or host not in self.srv:
            return []
        return [SrvRecord(10, 10, self.srv[host], "localhost")]


async def _no_well_known(host: str) -> WellKnownResponse | None:
    return None


@pytest.fixture
def network(homeserver_client: Callable[..., Any], tmp_path: Path) -> Network:
    return Network(homeserver_client, tmp_path)


async def test_join_and_messages_over_verified_tls(network: Network) -> None:
    a = await network.server("a.test", cert_name="a.test")
    b = await network.server("b.test", cert_name="b.test")
    alice = await RoomUser.make(a.client, "alice")
    bob = await RoomUser.make(b.client, "bob")
    room_id = await alice.create_room(preset="public_chat", name="Verified")

    await bob.ok("POST", f"/join/{room_id}?server_name=a.test")
    assert await membership(alice, room_id, bob.user_id) == "join"
    await alice.say(room_id, "hello over TLS")
    await eventually(lambda: sees(bob, room_id, "hello over TLS"))
    await bob.say(room_id, "and back")
    await eventually(lambda: sees(alice, room_id, "and back"))

    # Each asked for the other by its server name, not by the host it connected to.
    assert a.sni and set(a.sni) == {"a.test"}
    assert b.sni and set(b.sni) == {"b.test"}


@pytest.mark.parametrize(
    ("presented", "issuer", "reason"),
    [
        ("elsewhere.test", "trusted", "Hostname mismatch"),
        ("localhost", "untrusted", "unable to get local issuer certificate"),
    ],
    ids=["wrong-name", "untrusted-ca"],
)
async def test_bad_certificate_is_not_federated_with(
    network: Network, tmp_path: Path, presented: str, issuer: str, reason: str
) -> None:
    a = await network.server("a.test", cert_name="a.test")
    ca = network.ca if issuer == "trusted" else TestCa(tmp_path / "rogue", "Rogue CA")
    bad = await network.server(f"localhost:{free_port()}", cert_name=presented, ca=ca)
    carol = await RoomUser.make(bad.client, "carol")
    room_id = await carol.create_room(preset="public_chat")

    with pytest.raises(Unreachable, match=reason):
        await a.hs.remote_client.get_json(bad.hs.server_name, VERSION_PATH)

    alice = await RoomUser.make(a.client, "alice")
    resp = await alice.client.post(
        f"/_matrix/client/v3/join/{room_id}?server_name={bad.hs.server_name}",
        headers=alice.headers,
        json={},
    )
    body = await resp.json()
    assert resp.status == 502, body
    assert body["errcode"] == "M_UNKNOWN"
    assert "certificate verify failed" in body["error"]
    assert await membership(carol, room_id, alice.user_id) is None

    # The server is up and answers anyone who does not check its certificate.
    async with aiohttp.ClientSession() as session:
        url = f"https://127.0.0.1:{bad.tls_port}{VERSION_PATH}"
        async with session.get(url, ssl=False) as resp:
            assert resp.status == 200
