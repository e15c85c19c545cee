"""
The deployment's own certificate authority, kept on the salt-master, for ``cache.redis.tls:
{issue: true}``: one CA per deployment file, one key and certificate per Redis host (its
IP address and hostname as subjectAltNames, usable as server and as client, since the
nodes of a cluster and a replica's link are both), renewed before they expire.

Everything is made with Salt's own ``x509`` execution module (x509_v2), which
``redis_deployment``'s ``ext_pillar`` passes in as ``x509`` (``{name: function}``), and
stored under the master's cache directory, readable by root only, so that every pillar
render of a host gives the same certificate until it is due for renewal. Concurrent
renders (the master's workers) take a lock.

Not an ext_pillar of its own (no ``ext_pillar`` function): ``redis_deployment`` loads this
file by path, which works wherever Salt (or a test) loads that module from.
"""

import contextlib
import datetime
import fcntl
import hashlib
import os
import tempfile

CA_DAYS_VALID = 3650
CA_COMMON_NAME = "Redis deployment CA (Salt)"
# A host certificate is reissued when less than this share of its validity is left.
RENEW_WHEN_LEFT = 1 / 3


def store_for(cachedir, deployment_path):
    """Where the CA of the deployment at ``deployment_path`` lives under the master's cache."""
    digest = hashlib.sha256(os.path.abspath(deployment_path).encode()).hexdigest()[:16]
    return os.path.join(cachedir, "redis_tls", digest)


@contextlib.contextmanager
def _locked(directory):
    os.makedirs(directory, mode=0o700, exist_ok=True)
    os.chmod(directory, 0o700)
    descriptor = os.open(os.path.join(directory, ".lock"), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


def _read(path):
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    with os.fdopen(descriptor, encoding="utf-8") as handle:
        return handle.read()


def _write(path, text):
    """``text`` at ``path``, whole or not at all, readable by root only."""
    handle, temporary = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".new-")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
        temporary = None
    finally:
        if temporary:
            os.unlink(temporary)


def _as_list(value):
    return value if isinstance(value, list) else [value]


def _names(certificate, x509):
    """The subjectAltNames of ``certificate`` as a set of strings ("IP:…", "DNS:…")."""
    found = x509["x509.read_certificate"](certificate)["extensions"].get("subjectAltName", {})
    names = found.get("value", found) if isinstance(found, dict) else found
    return {str(n).replace("IP Address:", "IP:").replace(" ", "") for n in _as_list(names)}


def _due(certificate, ca, days_valid, x509):
    """Whether the host certificate must be issued again: signed by another CA, or less than
    ``RENEW_WHEN_LEFT`` of its validity left."""
    if not x509["x509.verify_signature"](certificate, ca):
        return True
    return x509["x509.expires"](certificate, days=max(1, int(days_valid * RENEW_WHEN_LEFT)))


def _authority(directory, x509):
    """``(ca key, ca certificate)``, made on first use."""
    key_path, cert_path = os.path.join(directory, "ca.key"), os.path.join(directory, "ca.crt")
    key, cert = _read(key_path), _read(cert_path)
    if key and cert and not x509["x509.expires"](cert, days=CA_DAYS_VALID // 10):
        return key, cert
    # A renewal keeps the key and the name: host certificates signed before still verify
    # against the new CA certificate, and new ones against the old, so hosts that got the
    # new ca.crt and hosts that did not yet trust each other.
    key = key or x509["x509.create_private_key"](algo="ec", keysize=256)
    cert = x509["x509.create_certificate"](
        signing_private_key=key,
        CN=CA_COMMON_NAME,
        basicConstraints="critical, CA:true, pathlen:0",
        keyUsage="critical, cRLSign, keyCertSign",
        days_valid=CA_DAYS_VALID,
    )
    _write(key_path, key)
    _write(cert_path, cert)
    return key, cert


def issued(directory, hostname, ip, x509, days_valid=365):
    """
    ``{"ca", "cert", "key"}`` (PEM) for the Redis host ``hostname`` at ``ip``, from the CA in
    ``directory`` (made on first use): the stored certificate while it is good, else a new
    one (first use, renewal due, another address or name, another CA). ``days_valid``: a new
    host certificate's lifetime.
    """
    wanted_names = {f"IP:{ip}", f"DNS:{hostname}"}
    with _locked(directory):
        ca_key, ca = _authority(directory, x509)
        hosts = os.path.join(directory, "hosts")
        os.makedirs(hosts, mode=0o700, exist_ok=True)
        key_path = os.path.join(hosts, f"{hostname}.key")
        cert_path = os.path.join(hosts, f"{hostname}.crt")
        key, cert = _read(key_path), _read(cert_path)
        if not key:
            key = x509["x509.create_private_key"](algo="ec", keysize=256)
            _write(key_path, key)
            cert = None
        if not cert or _names(cert, x509) != wanted_names or _due(cert, ca, days_valid, x509):
            cert = x509["x509.create_certificate"](
                signing_private_key=ca_key,
                signing_cert=ca,
                private_key=key,
                CN=hostname,
                subjectAltName=f"IP:{ip}, DNS:{hostname}",
                basicConstraints="critical, CA:false",
                keyUsage="critical, digitalSignature, keyEncipherment",
                extendedKeyUsage="serverAuth, clientAuth",
                days_valid=days_valid,
            )
            _write(cert_path, cert)
    return {"ca": ca, "cert": cert, "key": key}


def not_after(certificate, x509):
    """When ``certificate`` expires (a ``datetime``), for status and the notes."""
    text = x509["x509.read_certificate"](certificate)["not_after"]
    return datetime.datetime.strptime(text, "%Y-%m-%d %H:%M:%S")
