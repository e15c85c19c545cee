"""
cache.redis.tls: validated before anything reaches a host (file, key, what was expected);
a node's pillar names the files Redis and the tools use; with ``issue: true`` the master's
CA (_pillar/redis_certificates.py, Salt's x509 module) gives each Redis host its own
certificate (its IP and hostname), the same at every render until renewal is due, and the
private key only to the minion's own pillar request.
"""

import hashlib
import os
import ssl
import stat

import pytest
from support.loaders import utils_dunder
from support.tls import certificates, x509_functions
from test_deployment import ENV, MASTER_OPTS, load, make_doc, minion_pillar_request, rd, write_yaml

FILES = {"cert_file": "/etc/ssl/redis/node.crt", "key_file": "/etc/ssl/private/redis.key",
         "ca_file": "/etc/ssl/redis/ca.crt"}


def refused(tmp_path, tls, **settings):
    with pytest.raises(rd.DeploymentError) as err:
        load(tmp_path, make_doc(3, {"tls": tls, **settings}))
    return str(err.value)


def test_no_tls_key_means_plain_tcp(tmp_path):
    assert "tls" not in rd.node_pillar(load(tmp_path, make_doc(3)), "server1", 4096)


def test_the_yamls_own_files_reach_every_node(tmp_path):
    pillar = rd.node_pillar(load(tmp_path, make_doc(3, {"tls": dict(FILES)})), "server2", 4096)
    assert pillar["tls"] == {**FILES, "issue": False, "plain_port": False, "days_valid": 365}


def test_issue_names_the_files_salt_writes(tmp_path):
    pillar = rd.node_pillar(load(tmp_path, make_doc(3, {"tls": {"issue": True}})), "server1", 4096)
    assert pillar["tls"]["issue"] is True
    assert {pillar["tls"][name] for name in FILES} == set(rd.TLS_ISSUED_FILES.values())


@pytest.mark.parametrize("tls, key, expected", [
    ({"cert_file": "/a.crt", "key_file": "/a.key"}, "cache.redis.tls.ca_file", "expected the absolute path"),
    ({**FILES, "key_file": "relative.key"}, "cache.redis.tls.key_file", "expected the absolute path"),
    ({"issue": True, "ca_file": "/ca.crt"}, "cache.redis.tls.ca_file", "either issue: true"),
    ({"issue": "yes"}, "cache.redis.tls.issue", "expected true or false"),
    ({"issue": True, "plain_port": True}, "cache.redis.tls.plain_port", "the port number where plain TCP"),
    ({"issue": True, "plain_port": 6379}, "cache.redis.tls.plain_port", "6379 is cache.redis.port"),
    ({"issue": True, "plain_port": 16379}, "cache.redis.tls.plain_port", "the cluster bus"),
    ({"issue": True, "days_valid": 1}, "cache.redis.tls.days_valid", "expected"),
    ({"issue": True, "ca": "/x"}, "cache.redis.tls.ca", "unknown key"),
    ("yes", "cache.redis.tls", "expected"),
])
def test_a_wrong_tls_setting_is_refused_naming_the_key(tmp_path, tls, key, expected):
    message = refused(tmp_path, tls)
    assert f": {key}: " in message and expected in message, message
    assert "Traceback" not in message


def test_a_sentinel_pair_and_its_witness_each_get_a_certificate_and_know_every_sentinels(tmp_path, monkeypatch):
    doc = make_doc(2, {"tls": {"issue": True}, "sentinel": {"witnesses": ["server3"]}}, witnesses_without_redis=1)
    path = write_yaml(tmp_path, doc)
    monkeypatch.setattr(rd, "__opts__", dict(MASTER_OPTS, cachedir=str(tmp_path / "cache")), raising=False)
    monkeypatch.setattr(rd, "__salt__", x509_functions(), raising=False)
    monkeypatch.setenv("REDIS_PASSWORD", ENV["REDIS_PASSWORD"])
    pillars = {}
    for number, host in enumerate(("server1", "server2", "server3"), 1):
        monkeypatch.setattr(rd, "__grains__", {"mem_total": 4096, "ipv4": [f"10.0.0.{number}"]}, raising=False)
        with minion_pillar_request(host):
            pillars[host] = rd.ext_pillar(host, {}, config=path)["redis"]
    assert pillars["server3"]["role"] == "sentinel-only", pillars["server3"]
    certs = {host: pillar["tls"]["issued"]["cert"] for host, pillar in pillars.items()}
    assert len(set(certs.values())) == 3 and all("PRIVATE KEY" in p["tls"]["issued"]["key"] for p in pillars.values())
    # Every node knows the certificate each Sentinel should serve: the restart order needs it.
    served = {host: rd._fingerprint(cert) for host, cert in certs.items()}
    assert all(pillar["tls"]["sentinel_certificates"] == served for pillar in pillars.values())
    # The master's fingerprint is the one a minion computes of its file (redis_common), and what a client sees.
    common = utils_dunder(["redis_common"])
    assert served["server1"] == common["redis_common.pem_fingerprint"](certs["server1"])
    assert served["server1"] == hashlib.sha256(ssl.PEM_cert_to_DER_cert(certs["server1"])).hexdigest()


# ---------------------------------------------------------------- the master's CA


def test_each_host_gets_its_own_certificate_from_one_ca_the_same_at_every_render(tmp_path):
    x509 = x509_functions()
    first = certificates.issued(str(tmp_path), "server1", "10.0.0.1", x509)
    other = certificates.issued(str(tmp_path), "server2", "10.0.0.2", x509)
    assert certificates.issued(str(tmp_path), "server1", "10.0.0.1", x509) == first
    assert first["ca"] == other["ca"] and first["cert"] != other["cert"] and first["key"] != other["key"]
    assert x509["x509.verify_signature"](first["cert"], first["ca"])
    read = x509["x509.read_certificate"](first["cert"])
    assert set(read["extensions"]["subjectAltName"]["value"]) == {"IP:10.0.0.1", "DNS:server1"}
    assert read["extensions"]["extendedKeyUsage"]["value"] == ["serverAuth", "clientAuth"]
    # Root's alone on the master.
    for path in (tmp_path / "ca.key", tmp_path / "hosts" / "server1.key", tmp_path / "hosts" / "server1.crt"):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
    assert stat.S_IMODE(os.stat(tmp_path).st_mode) == 0o700


def test_a_certificate_is_issued_again_for_a_new_address_and_when_renewal_is_due(tmp_path):
    x509 = x509_functions()
    first = certificates.issued(str(tmp_path), "server1", "10.0.0.1", x509, days_valid=30)
    moved = certificates.issued(str(tmp_path), "server1", "10.0.0.9", x509, days_valid=30)
    assert moved["cert"] != first["cert"] and moved["key"] == first["key"]
    # 30 days valid, renewed with a third left: a certificate of 9 days is due at once.
    short = x509["x509.create_certificate"](
        signing_private_key=(tmp_path / "ca.key").read_text(), signing_cert=first["ca"], private_key=first["key"],
        CN="server1", subjectAltName="IP:10.0.0.9, DNS:server1", days_valid=9)
    (tmp_path / "hosts" / "server1.crt").write_text(short)
    renewed = certificates.issued(str(tmp_path), "server1", "10.0.0.9", x509, days_valid=30)
    assert renewed["cert"] not in (short, moved["cert"])
    assert not x509["x509.expires"](renewed["cert"], days=10)


def test_ext_pillar_gives_the_key_to_the_minions_own_request_only(tmp_path, monkeypatch):
    path = write_yaml(tmp_path, make_doc(3, {"tls": {"issue": True}}))
    monkeypatch.setattr(rd, "__grains__", {"mem_total": 4096, "ipv4": ["127.0.0.1", "10.0.0.1"]}, raising=False)
    monkeypatch.setattr(rd, "__opts__", dict(MASTER_OPTS, cachedir=str(tmp_path / "cache")), raising=False)
    monkeypatch.setattr(rd, "__salt__", x509_functions(), raising=False)
    monkeypatch.setenv("REDIS_PASSWORD", ENV["REDIS_PASSWORD"])
    with minion_pillar_request("server1"):
        own = rd.ext_pillar("server1", {}, config=path)["redis"]["tls"]["issued"]
    shown = rd.ext_pillar("server1", {}, config=path)["redis"]["tls"]["issued"]
    assert "PRIVATE KEY" in own["key"] and "PRIVATE KEY" not in repr(shown)
    assert shown["key"] == rd.KEY_HIDDEN and shown["cert"] == own["cert"] and shown["ca"] == own["ca"]


def test_a_renewed_ca_keeps_its_key_so_every_host_certificate_stays_trusted(tmp_path):
    """The CA is renewed with a tenth of its validity left, with the same key and name: a host
    certificate issued before verifies against the new CA certificate, and is not reissued
    for it; hosts that already hold the new CA and hosts that do not yet trust each other."""
    x509 = x509_functions()
    first = certificates.issued(str(tmp_path), "server1", "10.0.0.1", x509)
    ca_key = (tmp_path / "ca.key").read_text()
    ending = x509["x509.create_certificate"](
        signing_private_key=ca_key, CN=certificates.CA_COMMON_NAME, basicConstraints="critical, CA:true, pathlen:0",
        keyUsage="critical, cRLSign, keyCertSign", days_valid=100)
    (tmp_path / "ca.crt").write_text(ending)
    (tmp_path / "hosts" / "server1.crt").write_text(first["cert"])
    renewed = certificates.issued(str(tmp_path), "server1", "10.0.0.1", x509)
    assert renewed["ca"] not in (ending, first["ca"]) and (tmp_path / "ca.key").read_text() == ca_key
    assert not x509["x509.expires"](renewed["ca"], days=3000)
    assert renewed["cert"] == first["cert"]
    other = certificates.issued(str(tmp_path), "server2", "10.0.0.2", x509)
    assert x509["x509.verify_signature"](first["cert"], renewed["ca"])
    assert x509["x509.verify_signature"](other["cert"], ending)
