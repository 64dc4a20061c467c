"""``gamesdk-server cert`` and the certificate checks of ``check-config``: a local CA, region certificates,
expiry and name mismatches reported with a clear message and exit code 2."""

from __future__ import annotations

import datetime
import io
import shutil
from pathlib import Path

from cryptography import x509
from server_kit import EXAMPLES

from server.certs import certificate_names, check_certificate, load_certificate
from server.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, main


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def tls_config(tmp_path: Path, cert: str, key: str) -> Path:
    path = tmp_path / "eu.toml"
    shutil.copy(EXAMPLES / "eu.toml", path)
    text = path.read_text().replace('listen = "udp:127.0.0.1:5060"',
                                    'listen = ["udp:127.0.0.1:5060", "tls:127.0.0.1:5061"]')
    text += f'\n[tls]\ncertificate = "{cert}"\nkey = "{key}"\nca = "pki/ca.crt"\n'
    path.write_text(text)
    return path


def test_cert_ca_and_region_make_a_chain(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    code, out, _ = run("cert", "ca", "--dir", str(pki))
    assert code == EXIT_OK and "ca.crt" in out
    code, out, _ = run("cert", "region", "eu.gamesdk.test", "--ca", str(pki), "--ip", "127.0.0.1")
    assert code == EXIT_OK
    leaf = load_certificate(pki / "eu.gamesdk.test.crt")[0]
    ca = load_certificate(pki / "ca.crt")[0]
    leaf.verify_directly_issued_by(ca)
    dns, ips = certificate_names(leaf)
    assert "eu.gamesdk.test" in dns and ips == {"127.0.0.1"}
    assert (pki / "eu.gamesdk.test.key").stat().st_mode & 0o077 == 0  # private key: owner only
    assert check_certificate(pki / "eu.gamesdk.test.crt", pki / "eu.gamesdk.test.key", "eu.gamesdk.test") == []


def test_cert_errors_are_one_line(tmp_path: Path) -> None:
    code, _, err = run("cert", "region", "eu.gamesdk.test", "--ca", str(tmp_path / "none"))
    assert code == EXIT_FAILED and "ca.crt does not exist" in err
    code, _, err = run("cert", "region", "eu.gamesdk.test", "--ca", str(tmp_path / "none"), "--days", "0")
    assert code == EXIT_USAGE and "--days" in err
    run("cert", "ca", "--dir", str(tmp_path))
    code, _, err = run("cert", "region", "eu.gamesdk.test", "--ca", str(tmp_path), "--ip", "not-an-ip")
    assert code == EXIT_FAILED and "not an IP address" in err and "Traceback" not in err


def test_check_config_accepts_a_good_certificate(tmp_path: Path) -> None:
    run("cert", "ca", "--dir", str(tmp_path / "pki"))
    run("cert", "region", "eu.gamesdk.test", "--ca", str(tmp_path / "pki"))
    conf = tls_config(tmp_path, "pki/eu.gamesdk.test.crt", "pki/eu.gamesdk.test.key")
    code, out, err = run("check-config", "--config", str(conf))
    assert code == EXIT_OK, err
    assert "tls:127.0.0.1:5061" in out and "warning" not in out


def test_check_config_reports_name_mismatch_and_wrong_key(tmp_path: Path) -> None:
    run("cert", "ca", "--dir", str(tmp_path / "pki"))
    run("cert", "region", "na.gamesdk.test", "--ca", str(tmp_path / "pki"))
    run("cert", "region", "eu.gamesdk.test", "--ca", str(tmp_path / "pki"))
    conf = tls_config(tmp_path, "pki/na.gamesdk.test.crt", "pki/na.gamesdk.test.key")
    code, _, err = run("check-config", "--config", str(conf))
    assert code == EXIT_USAGE and "is for na.gamesdk.test" in err and "not eu.gamesdk.test" in err
    conf = tls_config(tmp_path, "pki/eu.gamesdk.test.crt", "pki/na.gamesdk.test.key")
    code, _, err = run("check-config", "--config", str(conf))
    assert code == EXIT_USAGE and "is not the key of" in err


def test_check_config_reports_expiry(tmp_path: Path) -> None:
    run("cert", "ca", "--dir", str(tmp_path / "pki"))
    run("cert", "region", "eu.gamesdk.test", "--ca", str(tmp_path / "pki"), "--days", "10")
    conf = tls_config(tmp_path, "pki/eu.gamesdk.test.crt", "pki/eu.gamesdk.test.key")
    code, out, _ = run("check-config", "--config", str(conf))
    assert code == EXIT_OK and "warning:" in out and "expires in 9 day(s)" in out
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=11)
    cert = tmp_path / "pki" / "eu.gamesdk.test.crt"
    try:
        check_certificate(cert, None, "eu.gamesdk.test", now=later)
    except Exception as exc:  # noqa: BLE001 - the message is what the operator reads
        assert "expired on" in str(exc)
    else:
        raise AssertionError("an expired certificate passed")


def test_check_config_needs_certificate_for_tls(tmp_path: Path) -> None:
    path = tmp_path / "eu.toml"
    path.write_text((EXAMPLES / "eu.toml").read_text().replace(
        'listen = "udp:127.0.0.1:5060"', 'listen = ["udp:127.0.0.1:5060", "tls:127.0.0.1:5061"]'))
    code, _, err = run("check-config", "--config", str(path))
    assert code == EXIT_USAGE and "tls.certificate" in err and "gamesdk-server cert" in err
    missing = tls_config(tmp_path, "nope.crt", "nope.key")
    code, _, err = run("check-config", "--config", str(missing))
    assert code == EXIT_USAGE and "cannot read" in err


def test_x509_is_ecdsa_p256(tmp_path: Path) -> None:
    # ES256 identities are signed with the region's TLS key: it must be P-256.
    run("cert", "ca", "--dir", str(tmp_path))
    run("cert", "region", "eu.gamesdk.test", "--ca", str(tmp_path))
    leaf = x509.load_pem_x509_certificate((tmp_path / "eu.gamesdk.test.crt").read_bytes())
    assert leaf.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
