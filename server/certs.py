"""Certificates for SIP over TLS and signed identities: a local CA and region certificates made with
``cryptography``, and the checks ``check-config`` runs on the files a region names.

A region has one ECDSA P-256 key: its TLS certificate (server and client use, for mutual TLS between regions)
and the key that signs its PASSporTs (ES256). The local CA is for tests, the demo and small deployments;
production configs point at files issued by the operator's own CA.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["CertFiles", "CertProblem", "certificate_names", "check_certificate", "load_certificate",
           "make_ca", "make_region_certificate", "make_test_pki"]

#: Certificates issued here last this long unless asked otherwise (a local CA for tests and small deployments).
DEFAULT_DAYS = 825
#: check-config warns this many days before a certificate expires.
WARN_DAYS = 30


class CertProblem(Exception):
    """A certificate file is missing, unreadable, expired or names something else."""


@dataclass(frozen=True, slots=True)
class CertFiles:
    """The PEM files of one identity: certificate (with chain) and private key."""

    certificate: Path
    key: Path


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)  # a private key is readable by its owner only
    path.write_bytes(data)


def _write_cert(path: Path, *certs: x509.Certificate) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs))


def make_ca(directory: Path, name: str = "gamesdk local CA", *, days: int = 3650) -> CertFiles:
    """Create ``ca.crt`` and ``ca.key`` in ``directory``: a self-signed CA that signs region certificates."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    files = CertFiles(directory / "ca.crt", directory / "ca.key")
    _write_cert(files.certificate, cert)
    _write_key(files.key, key)
    return files


def make_region_certificate(ca: CertFiles, directory: Path, domain: str, *, addresses: tuple[str, ...] = (),
                            days: int = DEFAULT_DAYS) -> CertFiles:
    """Create ``<domain>.crt`` and ``<domain>.key``: a certificate for ``domain`` (and IP ``addresses``) signed
    by ``ca``, usable as a TLS server and client (mutual TLS between regions) and for signing identities."""
    ca_cert = load_certificate(ca.certificate)[0]
    ca_key = serialization.load_pem_private_key(ca.key.read_bytes(), password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise CertProblem(f"{ca.key}: the CA key must be an EC key")
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName(domain)]
    for text in addresses:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(text)))
        except ValueError:
            raise CertProblem(f"{text!r} is not an IP address") from None
    # RFC 8224 section 7.2 and RFC 5922: the identity is the SIP URI of the domain, beside the DNS name.
    names.append(x509.UniformResourceIdentifier(f"sip:{domain}"))
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domain)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(min(now + datetime.timedelta(days=days), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                       critical=False)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=False, crl_sign=False,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    files = CertFiles(directory / f"{domain}.crt", directory / f"{domain}.key")
    _write_cert(files.certificate, cert)
    _write_key(files.key, key)
    return files


def make_test_pki(directory: Path, domains: tuple[str, ...], *,
                  addresses: tuple[str, ...] = ("127.0.0.1", "::1")) -> dict[str, CertFiles]:
    """A CA and one certificate per domain in ``directory`` (tests and the demo); key ``"ca"`` is the CA."""
    ca = make_ca(directory)
    made = {"ca": ca}
    for domain in domains:
        made[domain] = make_region_certificate(ca, directory, domain, addresses=addresses)
    return made


def load_certificate(path: Path) -> list[x509.Certificate]:
    """Every certificate in a PEM file, leaf first; :class:`CertProblem` when there is none."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CertProblem(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise CertProblem(f"{path} holds no PEM certificate") from None
    return certs


def certificate_names(cert: x509.Certificate) -> tuple[set[str], set[str]]:
    """The DNS names (with ``sip:`` URIs' hosts) and IP addresses a certificate is for."""
    dns: set[str] = set()
    ips: set[str] = set()
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = None
    if san is not None:
        dns.update(n.lower() for n in san.get_values_for_type(x509.DNSName))
        ips.update(str(a) for a in san.get_values_for_type(x509.IPAddress))
        for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
            if uri.lower().startswith("sip:"):
                dns.add(uri[4:].lower())
    if not dns:
        for attr in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME):
            dns.add(str(attr.value).lower())
    return dns, ips


def check_certificate(cert_path: Path, key_path: Path | None, domain: str, *, now: datetime.datetime | None = None,
                      warn_days: int = WARN_DAYS) -> list[str]:
    """Check a region's certificate file; raises :class:`CertProblem` for what stops TLS from working
    (unreadable, expired, not for ``domain``, key does not match) and returns warnings (expires soon)."""
    now = now or _now()
    certs = load_certificate(cert_path)
    leaf = certs[0]
    if leaf.not_valid_after_utc <= now:
        raise CertProblem(f"{cert_path} expired on {leaf.not_valid_after_utc:%Y-%m-%d}")
    if leaf.not_valid_before_utc > now:
        raise CertProblem(f"{cert_path} is not valid before {leaf.not_valid_before_utc:%Y-%m-%d %H:%M}Z")
    dns, _ = certificate_names(leaf)
    if domain.lower() not in dns:
        raise CertProblem(f"{cert_path} is for {', '.join(sorted(dns)) or 'no name'}, not {domain}")
    if key_path is not None:
        try:
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        except OSError as exc:
            raise CertProblem(f"cannot read {key_path}: {exc.strerror or exc}") from None
        except (ValueError, TypeError):
            raise CertProblem(f"{key_path} holds no unencrypted PEM private key") from None
        if key.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo) != \
                leaf.public_key().public_bytes(serialization.Encoding.DER,
                                               serialization.PublicFormat.SubjectPublicKeyInfo):
            raise CertProblem(f"{key_path} is not the key of {cert_path}")
    warnings = []
    left = leaf.not_valid_after_utc - now
    if left < datetime.timedelta(days=warn_days):
        warnings.append(f"{cert_path} expires in {left.days} day(s), on {leaf.not_valid_after_utc:%Y-%m-%d}")
    return warnings
