"""Loopback services made reachable from containers, on the Docker bridge address.

A function in a container reaches the host through the bridge, not loopback. The broker
accepts plain ``http://`` only for loopback upstreams, so the upstream is served there
over TLS, with a certificate from a test CA made for this run (the function's image trusts
it); Secrets Manager (moto) is forwarded as it is.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import select
import socket
import ssl
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class TestCA:
    ca_pem: bytes
    cert_pem: bytes  # the server's certificate for one IP address
    key_pem: bytes

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        with tempfile.TemporaryDirectory() as folder:
            cert, key = Path(folder) / "cert.pem", Path(folder) / "key.pem"
            cert.write_bytes(self.cert_pem)
            key.write_bytes(self.key_pem)
            context.load_cert_chain(cert, key)
        return context


def make_test_ca(ip: str) -> TestCA:
    """A CA valid for a day, and a server certificate it signed for ``ip``."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "token-broker local test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ip)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    return TestCA(
        ca_pem=ca.public_bytes(pem),
        cert_pem=cert.public_bytes(pem),
        key_pem=key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )


class Forwarder:
    """Listens on ``host`` (a free port), optionally terminates TLS, and relays to a loopback port."""

    def __init__(self, host: str, target_port: int, tls: ssl.SSLContext | None = None) -> None:
        self._target = ("127.0.0.1", target_port)
        self._tls = tls
        self._listener = socket.create_server((host, 0))
        self.port = int(self._listener.getsockname()[1])
        self.url = f"{'https' if tls else 'http'}://{host}:{self.port}"
        self._closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True, name=f"forward-{self.port}").start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with contextlib.ExitStack() as sockets:
            sockets.enter_context(client)
            try:
                if self._tls is not None:
                    client.settimeout(10)
                    client = sockets.enter_context(self._tls.wrap_socket(client, server_side=True))
                    client.settimeout(None)
                upstream = sockets.enter_context(socket.create_connection(self._target, timeout=10))
                upstream.settimeout(None)
            except OSError:
                return  # a failed handshake or a refused target: the caller sees a closed connection
            _relay(client, upstream)

    def close(self) -> None:
        self._closed.set()
        self._listener.close()


def _relay(client: socket.socket, upstream: socket.socket) -> None:
    """Copy both ways until either side closes, from one thread (an SSL socket is not thread-safe)."""
    peers: dict[socket.socket, socket.socket] = {client: upstream, upstream: client}
    while True:
        ready: list[socket.socket] = [client] if isinstance(client, ssl.SSLSocket) and client.pending() else []
        if not ready:
            ready, _, _ = select.select(list(peers), [], [], 60)
            if not ready:
                return  # idle for a minute
        for source in ready:
            try:
                data = source.recv(65536)
                if not data:
                    return
                peers[source].sendall(data)
            except OSError:
                return
