"""TLS for the tests: certificates from the formula's own CA code (_pillar/redis_certificates.py
with Salt's x509 module, as the master issues them), a TLS client's view of a server's
certificate, and what a plain client gets from a TLS-only port."""

import socket
import ssl

import salt.modules.x509_v2 as salt_x509
from cryptography import x509 as crypto_x509
from support.lab import ROOT
from support.loaders import load_file

certificates = load_file("redis_certificates_for_tests", ROOT / "_pillar" / "redis_certificates.py")


def x509_functions():
    """Salt's x509 (x509_v2) execution functions, as the master's loader gives them to the pillar."""
    salt_x509.__opts__ = {"fips_mode": False}
    salt_x509.__salt__ = {}
    salt_x509.__context__ = {}
    return {f"x509.{name}": getattr(salt_x509, name) for name in
            ("create_private_key", "create_certificate", "read_certificate", "expires", "verify_signature")}


def issue_files(store, directory, hostname, ip, days_valid=365):
    """Issue (or reuse) ``hostname``'s certificate from the CA in ``store`` and write the three
    files into ``directory`` as salt/redis/tls.sls does: ``{"cert_file", "key_file", "ca_file"}``."""
    issued = certificates.issued(str(store), hostname, ip, x509_functions(), days_valid=days_valid)
    directory.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, part in (("cert_file", "cert"), ("key_file", "key"), ("ca_file", "ca")):
        path = directory / f"{part}.pem"
        path.write_text(issued[part])
        path.chmod(0o600 if part == "key" else 0o644)
        files[name] = str(path)
    return files


def served_serial(host, port, ca_file):
    """The serial number of the certificate the TLS port at ``host:port`` serves."""
    context = ssl.create_default_context(cafile=ca_file)
    context.check_hostname = False
    with socket.create_connection((host, port), timeout=5) as raw:
        with context.wrap_socket(raw) as wrapped:
            return crypto_x509.load_der_x509_certificate(wrapped.getpeercert(binary_form=True)).serial_number


def file_serial(cert_file):
    with open(cert_file, "rb") as handle:
        return crypto_x509.load_pem_x509_certificate(handle.read()).serial_number
