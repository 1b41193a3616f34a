"""TLS certificates and node keys for a federation, made with ``cryptography``.

* a certificate authority (``ca.crt``, ``ca.key``) that signs the SuperLink's certificate;
* the SuperLink's certificate and key (``server.pem``, ``server.key``) for the given host names
  and addresses;
* one key pair per node (``<name>`` private, OpenSSH format; ``<name>.pub``), ECDSA on
  SECP384R1 as Flower's SuperNode authentication expects. The public key is what the
  coordinator registers; the private key never leaves the node.

For a local federation and for tests. A production federation uses the organisations' own PKI.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

VALID_DAYS = 30
PEM = serialization.Encoding.PEM


@dataclass(frozen=True)
class ServerCredentials:
    """Paths of the CA certificate and the SuperLink's certificate and key."""

    ca_cert: Path
    cert: Path
    key: Path


def write_private(path: Path, data: bytes) -> None:
    """Write a private key readable by its owner only, whatever file was there before.

    A file that already exists keeps its mode when it is written over, so it is removed first
    and the new one created with mode 0600 (``O_EXCL``: no one can slip another file in).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_server_credentials(directory: Path, hosts: tuple[str, ...] = ("localhost",),
                            addresses: tuple[str, ...] = ("127.0.0.1",)) -> ServerCredentials:
    """Make a CA and a SuperLink certificate it signs, valid for ``hosts`` and ``addresses``."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    until = now + datetime.timedelta(days=VALID_DAYS)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = _name("credit-fl federation CA")
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now).not_valid_after(until)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP384R1())
    names: list[x509.GeneralName] = [x509.DNSName(h) for h in hosts]
    names += [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
    cert = (x509.CertificateBuilder().subject_name(_name(hosts[0])).issuer_name(ca_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(until)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256()))
    out = ServerCredentials(directory / "ca.crt", directory / "server.pem",
                            directory / "server.key")
    out.ca_cert.write_bytes(ca.public_bytes(PEM))
    write_private(directory / "ca.key", ca_key.private_bytes(
        PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    out.cert.write_bytes(cert.public_bytes(PEM))
    write_private(out.key, key.private_bytes(PEM, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))
    return out


def make_node_key(path: Path) -> Path:
    """Make a node's key pair: ``path`` (private), ``path.pub`` (to register); return the latter."""
    key = ec.generate_private_key(ec.SECP384R1())
    write_private(path, key.private_bytes(PEM, serialization.PrivateFormat.OpenSSH,
                                           serialization.NoEncryption()))
    public = path.with_name(path.name + ".pub")
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                     serialization.PublicFormat.OpenSSH))
    return public
