"""Functional tests of salt/redis/files/redis-check-config (Salt's check_cmd for the settings
file) with each supported server build: what Salt sees before a new file replaces the old."""

import datetime
import os
import pathlib
import shutil
import socket
import subprocess
import tempfile

import pytest
from conftest import CHECK_CONFIG, PASSWORD, SERVERS, redis_quote


@pytest.fixture
def short_tmpdir():
    """A private TMPDIR short enough for the script to use (its test server's unix socket lives there)."""
    directory = tempfile.mkdtemp(prefix="rcc-", dir="/tmp")
    yield pathlib.Path(directory)
    shutil.rmtree(directory)


@pytest.fixture
def check(server_build, tmp_path, short_tmpdir):
    """``check(path)``: run the script with this build first in PATH and a private TMPDIR."""
    temporary = short_tmpdir
    env = dict(os.environ, PATH=f"{server_build.path_dir(tmp_path)}:/usr/bin:/bin", TMPDIR=str(temporary))
    env.pop("REDISCLI_AUTH", None)

    def run(path):
        result = subprocess.run(
            ["sh", str(CHECK_CONFIG), str(path)], env=env, capture_output=True, text=True, timeout=30
        )
        assert os.listdir(temporary) == [], "the check left its work directory behind"
        return result

    return run


@pytest.fixture
def busy_port():
    """A port something else (the real node, say) listens on."""
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))
        sock.listen()
        yield sock.getsockname()[1]


def write_conf(tmp_path, *lines):
    path = tmp_path / "candidate.conf"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_accepts_a_valid_file_while_the_node_holds_its_port(check, tmp_path, busy_port):
    """Redis 7.2+ logs "Ready to accept connections unix": the check asks the server instead."""
    path = write_conf(
        tmp_path,
        f"port {busy_port}",
        "bind 127.0.0.1",
        "maxclients 1000",
        f"requirepass {redis_quote(PASSWORD)}",
        f"masterauth {redis_quote(PASSWORD)}",
        "cluster-enabled yes",
        "cluster-config-file nodes-6379.conf",
    )

    result = check(path)

    assert (result.returncode, result.stderr) == (0, "")


def test_rejects_a_bad_directive_with_redis_complaint(check, tmp_path):
    path = write_conf(tmp_path, "maxclients 1000", "no-such-directive yes")

    result = check(path)

    assert result.returncode == 1
    assert "no-such-directive" in result.stderr
    assert "Bad directive" in result.stderr


def test_never_shows_the_password_of_a_bad_line(check, tmp_path):
    path = write_conf(tmp_path, "maxclients 1000", f"requirepass {redis_quote(PASSWORD)} extra")

    result = check(path)

    assert result.returncode == 1
    assert "FATAL CONFIG FILE ERROR" in result.stderr
    for shown in (PASSWORD, PASSWORD.split('"')[0]):
        assert shown not in result.stderr + result.stdout


def _self_signed(tmp_path):
    """A certificate and key for a TLS configuration, made with cryptography (a Salt dependency)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "redis-check-config test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


def test_tls_port_of_the_running_node_does_not_fail_the_check(check, tmp_path, busy_port, server_build):
    """The node holds its TLS port: the check's server must not try to listen there."""
    cert_file, key_file = _self_signed(tmp_path)
    path = write_conf(
        tmp_path,
        "port 0",
        f"tls-port {busy_port}",
        f"tls-cert-file {cert_file}",
        f"tls-key-file {key_file}",
        f"tls-ca-cert-file {cert_file}",
    )

    result = check(path)

    if server_build.name == "redis-6.2":
        # This build has no TLS at all: Redis rejects the file, as it would at the next start.
        assert result.returncode == 1
        assert f"tls-port {busy_port}" in result.stderr
    else:
        assert (result.returncode, result.stderr) == (0, "")


@pytest.fixture
def valkey_named(tmp_path):
    """A directory holding ``valkey-server`` and ``valkey-cli`` under Valkey's own names (as
    Debian 13's valkey packages install them), with no ``redis-server`` of Valkey's."""
    build = SERVERS["valkey-9"]
    build.require()
    directory = tmp_path / "valkey-bin"
    directory.mkdir()
    (directory / "valkey-server").symlink_to(build.server)
    (directory / "valkey-cli").symlink_to(build.cli)
    return directory


def run_named(arguments, directory, tmp_dir):
    env = dict(os.environ, PATH=f"{directory}:/usr/bin:/bin", TMPDIR=str(tmp_dir))
    env.pop("REDISCLI_AUTH", None)
    return subprocess.run(["sh", str(CHECK_CONFIG), *arguments], env=env, capture_output=True, text=True,
                          timeout=30)


def test_checks_with_the_server_salt_names_for_valkey(valkey_named, tmp_path, short_tmpdir):
    """Salt passes the server's own binary and client (map.jinja's server_binary and cli): a
    directive only Valkey knows passes with Valkey's names, and fails with the default
    (the machine's redis-server 7.0), so the check ran the server named."""
    path = write_conf(tmp_path, "hide-user-data-from-log yes", "port 0")

    named = run_named(["valkey-server", "valkey-cli", str(path)], valkey_named, short_tmpdir)
    default = run_named([str(path)], valkey_named, short_tmpdir)

    assert named.returncode == 0, named.stderr
    assert default.returncode == 1 and "hide-user-data-from-log" in default.stderr
    assert os.listdir(short_tmpdir) == []


def test_a_server_that_is_not_installed_is_named(tmp_path, short_tmpdir):
    path = write_conf(tmp_path, "port 0")
    result = run_named(["valkey-server", "valkey-cli", str(path)], tmp_path, short_tmpdir)
    assert result.returncode == 2
    assert "valkey-server not found" in result.stderr
