"""TLS for the tests: certificates from the formula's own CA code (_pillar/redis_certificates.py
with Salt's x509 module, as the master issues them), a TLS client's view of a server's
certificate, what a plain client gets from a TLS-only port, and a client that speaks both."""

import socket
import ssl
import time

import redis
import salt.modules.x509_v2 as salt_x509
from cryptography import x509 as crypto_x509
from redis.backoff import NoBackoff
from redis.retry import Retry
from support.lab import ROOT
from support.loaders import load_file
from support.writers import Writer

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


class BothWaysWriter(Writer):
    """A client that speaks both protocols (as an application does during a migration): each
    write goes out on a new connection (an open one would outlive a switch), in the protocol
    that worked last, then in the other when that connection fails.

    A switch has a moment when neither protocol answers: Redis's ``CONFIG SET`` of ``port`` /
    ``tls-port`` closes the port's old listener before it binds the new one, and the kernel
    resets the connections still queued on the old one. That moment lasts microseconds on an
    idle host, longer when the server is preempted between the two calls on a loaded one, and
    no order of the switch's arguments removes it. So a write that neither protocol takes is
    tried again, both ways, as an application would, for up to ``patience`` seconds; one
    refused both ways for longer ends the thread (``errors``). ``refusals`` holds how long each
    such moment lasted (seconds); ``switches`` counts the changes of protocol. A restart also
    refuses for less than ``patience``: tests that rule restarts out compare run ids."""

    OTHER = {"plain": "tls", "tls": "plain"}

    def __init__(self, prefix, host, port, password, ca_file, check_hostname=True, patience=2.0):
        super().__init__(prefix)
        common = {"host": host, "port": port, "password": password, "socket_timeout": 1,
                  "socket_connect_timeout": 1, "retry": Retry(NoBackoff(), 0)}
        self.clients = {
            "plain": redis.Redis(**common),
            "tls": redis.Redis(**common, ssl=True, ssl_ca_certs=ca_file, ssl_check_hostname=check_hostname),
        }
        self.protocol, self.switches, self.patience, self.refusals = "plain", 0, patience, []
        self.refused_since = None  # when the write under way was first refused both ways

    def write(self, key, value):
        self.refused_since = None
        while True:
            for protocol in (self.protocol, self.OTHER[self.protocol]):
                for client in self.clients.values():
                    client.connection_pool.disconnect()
                try:
                    written = self.clients[protocol].set(key, value)
                except (redis.ConnectionError, redis.TimeoutError) as exc:
                    # A plain port does not answer a TLS handshake: it waits for the rest of a line.
                    refused = exc
                    continue
                if protocol != self.protocol:
                    self.protocol, self.switches = protocol, self.switches + 1
                if self.refused_since is not None:
                    self.refusals.append(time.monotonic() - self.refused_since)
                    self.refused_since = None
                return written
            # Neither protocol took it: the moment of a switch, or longer (then it is the finding).
            if self.refused_since is None:
                self.refused_since = time.monotonic()
            # Asked again every 10 ms, up to ``patience``; finish() ends the wait at once.
            if time.monotonic() - self.refused_since > self.patience or self._stop_event.wait(0.01):
                raise refused
