"""TLS-only Redis Cluster on real servers (Debian's Redis 7.0: the build with TLS; PyPI's
Redis 6.2 has none and Valkey 9's lacks its TLS module), formed by the formula's own modules with certificates from
the formula's CA code: every node speaks TLS only (``port 0``), the cluster bus too
(``tls-cluster``); our clients and ``redis-cli --cluster`` speak TLS; a renewed
certificate is served without a restart."""

import os
import shutil
import time

import pytest
import redis
from cluster_support import cluster_info, node_modules
from conftest import (SERVERS, RedisServer, cluster_port, free_port, load_node_module, load_state_module,
                      stop_process)
from redis.backoff import NoBackoff
from redis.retry import Retry
from support.tls import BothWaysWriter, file_serial, issue_files, served_serial
from support.waits import wait_until

TLS_BUILDS = ["redis-7.0"]


class TlsServer(RedisServer):
    """A cluster node that speaks TLS only, as salt/redis/map.jinja configures one."""

    def __init__(self, directory, build, tls):
        super().__init__(directory, build)
        self.tls = tls
        self.port = cluster_port()
        self.settings.update({
            "port": 0, "tls-port": self.port, "tls-cert-file": tls["cert_file"], "tls-key-file": tls["key_file"],
            "tls-ca-cert-file": tls["ca_file"], "tls-auth-clients": "optional", "tls-replication": "yes",
            "tls-cluster": "yes", "cluster-enabled": "yes", "cluster-config-file": "nodes.conf",
            "cluster-node-timeout": 2000, "appendonly": "no",
        })
        self.write_salt_conf()

    def client(self, password=None, timeout=5):
        return redis.Redis(host="127.0.0.1", port=self.port, password=password or self.password,
                           socket_timeout=timeout, socket_connect_timeout=timeout, decode_responses=True,
                           retry=Retry(NoBackoff(), 0), ssl=True, ssl_ca_certs=self.tls["ca_file"],
                           ssl_check_hostname=False)


@pytest.fixture(params=TLS_BUILDS)
def tls_cluster(request, tmp_path_factory):
    build = SERVERS[request.param]
    build.require()
    store = tmp_path_factory.mktemp("ca")
    servers = []
    try:
        for number in range(3):
            directory = tmp_path_factory.mktemp(f"tls{number}")
            tls = issue_files(store, directory / "tls", f"n{number}", "127.0.0.1")
            server = TlsServer(directory, build, tls)
            servers.append(server)
            server.start()
        yield servers, store
    finally:
        for server in servers:
            stop_process(server.process)


def test_a_tls_only_cluster_forms_and_our_tools_speak_tls(tls_cluster):
    servers, _ = tls_cluster
    nodes = node_modules(servers, tls=servers[0].tls)
    # Each node's pillar names its own files, as each host's does.
    for (mod, _, _), server in zip(nodes, servers):
        mod.__pillar__["redis"]["tls"] = server.tls
    formed = nodes[0][1].formed("cluster", timeout=60)
    assert formed["result"] is True, formed["comment"]
    for server in servers:
        wait_until(lambda server=server: "cluster_state:ok" in cluster_info(server), 30, "cluster_state ok")
        assert "cluster_slots_assigned:16384" in cluster_info(server)
        # Plain TCP: there is no plain port, and the TLS port does not answer a plain client.
        assert server.config("port") == "0"
        with pytest.raises(redis.ConnectionError):
            redis.Redis(port=server.port, password=server.password, socket_timeout=3,
                        retry=Retry(NoBackoff(), 0)).ping()
    # The nodes know each other at their TLS ports (the cluster bus is TLS too).
    nodes_text = servers[1].client().execute_command("CLUSTER", "NODES")
    assert all(f"127.0.0.1:{s.port}@" in nodes_text for s in servers), nodes_text
    # redis-cli --cluster (what growth, shrink and repair run) over TLS.
    mod = nodes[0][0]
    code, output = mod._redis_cli_cluster(["check", f"127.0.0.1:{servers[0].port}"], 60)
    assert code == 0 and "[OK] All 16384 slots covered." in output, output
    status = mod.cluster_view()
    assert status, status


def test_a_renewed_certificate_is_served_without_a_restart(tls_cluster):
    servers, store = tls_cluster
    server = servers[0]
    before = served_serial("127.0.0.1", server.port, server.tls["ca_file"])
    assert before == file_serial(server.tls["cert_file"])
    run_id = server.info()["run_id"]
    node = load_node_module({"redis": {"role": "cluster-node", "mode": "cluster", "port": server.port,
                                       "password": server.password, "tls": server.tls}})
    # The master's CA issues a new certificate once the stored one is due (here: removed).
    os.unlink(store / "hosts" / "n0.crt")
    renewed = issue_files(store, server.dir / "renewed", "n0", "127.0.0.1")
    shutil.copyfile(renewed["cert_file"], server.tls["cert_file"])

    assert node.reload_tls(port=server.port, dry_run=True)["reloaded"] is True
    assert served_serial("127.0.0.1", server.port, server.tls["ca_file"]) == before, "a dry run changed nothing"
    outcome = node.reload_tls(port=server.port)

    assert outcome["reloaded"] is True, outcome
    after = served_serial("127.0.0.1", server.port, server.tls["ca_file"])
    assert after == file_serial(server.tls["cert_file"]) != before
    assert server.info()["run_id"] == run_id, "no restart"


def test_reload_on_a_server_without_tls_changes_nothing(redis_server):
    node = load_node_module({"redis": {"role": "cluster-node", "mode": "cluster", "port": redis_server.port,
                                       "password": redis_server.password}})
    outcome = node.reload_tls(port=redis_server.port)
    assert outcome["reloaded"] is False and "does not run TLS" in outcome["comment"], outcome


def test_the_local_server_is_asked_in_the_protocol_it_speaks(tls_cluster, redis_server):
    """A bare host's package server speaks plain TCP until its first restart with the
    deployment's settings: our local client must reach it, then the TLS one."""
    from support.loaders import utils_dunder  # pylint: disable=import-outside-toplevel

    common = utils_dunder(["redis_common"])
    tls_server = tls_cluster[0][0]
    started = time.monotonic()
    assert common["redis_common.listens_as"]("127.0.0.1", tls_server.port, 5) != "plain"
    assert time.monotonic() - started < 2, "a TLS port closes the plain probe at once"
    assert common["redis_common.listens_as"]("127.0.0.1", redis_server.port, 5) == "plain"
    settings = {"password": redis_server.password, "tls": tls_server.tls}
    assert common["redis_common.client"](dict(settings, port=redis_server.port)).ping()
    assert common["redis_common.client"](dict(settings, password=tls_server.password, port=tls_server.port)).ping()


def test_a_running_server_switches_to_tls_and_back_live_with_no_write_refused(server, tmp_path):
    """cache.redis.tls turned on, then off, on a running server (of a formed deployment or
    not): the settings state switches it live (one CONFIG SET, no restart), a client that
    speaks both loses no write, and the server starts again as it runs (CONFIG REWRITE)."""
    tls = issue_files(tmp_path / "ca", tmp_path / "tls", "n0", "127.0.0.1")

    def no_restart(service=None):
        raise AssertionError("a switch between plain TCP and TLS restarted the server")

    state = load_state_module(server.port, no_restart)
    state.__salt__["redis_node.switch_tls"] = load_node_module(state.__pillar__).switch_tls
    plain = dict(server.settings)
    to_tls = dict(plain, port=0, **{"tls-port": server.port, "tls-cert-file": tls["cert_file"],
                                    "tls-key-file": tls["key_file"], "tls-ca-cert-file": tls["ca_file"],
                                    "tls-auth-clients": "optional", "tls-replication": "yes", "tls-cluster": "no"})
    run_id = server.info()["run_id"]
    writer = BothWaysWriter("both", "127.0.0.1", server.port, server.password, tls["ca_file"], check_hostname=False)
    writer.start()
    try:
        wait_until(lambda: len(writer.acknowledged) > 20, 10, "writes before the switch")
        state.__pillar__["redis"]["tls"] = tls
        state.__opts__["test"] = True
        dry = state.settings_applied("n0", to_tls, "redis-server")
        assert dry["result"] is None and "would switch to TLS live" in dry["comment"], dry
        assert speaks("127.0.0.1", server.port) == "plain", "a dry run changed nothing"
        state.__opts__["test"] = False
        switched = state.settings_applied("n0", to_tls, "redis-server")
        assert switched["result"] is True, switched
        assert switched["changes"]["protocol"] == {"old": "plain TCP", "new": "TLS"}, switched
        assert speaks("127.0.0.1", server.port) == "tls"
        again = state.settings_applied("n0", to_tls, "redis-server")
        assert again["result"] is True and again["changes"] == {}, again
        seen = len(writer.acknowledged)
        wait_until(lambda: len(writer.acknowledged) > seen + 20 and writer.switches, 10, "writes over TLS")

        state.__pillar__["redis"]["tls"] = None
        back = state.settings_applied("n0", plain, "redis-server")
        assert back["result"] is True and back["changes"]["protocol"]["new"] == "plain TCP", back
        assert speaks("127.0.0.1", server.port) == "plain"
        seen = len(writer.acknowledged)
        wait_until(lambda: len(writer.acknowledged) > seen + 20, 10, "writes over plain TCP again")
    finally:
        writer.finish()
    assert writer.errors == [] and writer.switches >= 2, (writer.errors, writer.switches)
    assert server.info()["run_id"] == run_id, "switched live, never restarted"
    client = server.client()
    stored = client.mget([f"both:{n}" for n in writer.acknowledged])
    assert stored == [str(n) for n in writer.acknowledged], "every acknowledged write is there"
    # Redis's own file agrees with Salt's: a restart comes back in plain TCP on the same port.
    server.restart()
    assert server.client().ping() and server.config("tls-port") == "0"


def test_the_client_that_speaks_both_rides_out_the_moment_a_switch_leaves_nothing_listening(server, tmp_path):
    """A switch's CONFIG SET closes the port's old listener before it binds the new one (and
    the connections still queued on the old one are reset): for that moment the port refuses
    in both protocols. It lasts microseconds, more on a loaded host; here it is stretched to
    0.2 s of refusals (the server listens elsewhere, then on its port again). A client that
    speaks both tries again through it and loses no write; it gives up only when refused for longer than
    its patience."""
    tls = issue_files(tmp_path / "ca", tmp_path / "tls", "n0", "127.0.0.1")
    writer = BothWaysWriter("gap", "127.0.0.1", server.port, server.password, tls["ca_file"], check_hostname=False)
    # One connection, kept open while the listener moves: connections outlive it.
    admin = redis.Redis(host="127.0.0.1", port=server.port, password=server.password, socket_timeout=5,
                        single_connection_client=True)
    writer.start()
    try:
        wait_until(lambda: len(writer.acknowledged) > 20, 10, "writes before the gap")
        admin.config_set("port", free_port())
        # The port stays closed until the writer has been refused both ways for 0.2 s.
        wait_until(lambda: writer.refused_since is not None and time.monotonic() - writer.refused_since > 0.2, 5,
                   "the writer refused both ways for 0.2 s")
        admin.config_set("port", server.port)
        seen = len(writer.acknowledged)
        wait_until(lambda: len(writer.acknowledged) > seen + 20, 10, lambda: f"writes after the gap ({writer.errors})")
    finally:
        writer.finish()
        admin.close()
    assert writer.errors == [], writer.errors
    assert writer.refusals and max(writer.refusals) > 0.1, ("the writer met the gap", writer.refusals)
    stored = server.client().mget([f"gap:{n}" for n in writer.acknowledged])
    assert stored == [str(n) for n in writer.acknowledged], "every acknowledged write is there"


def speaks(host, port):
    from support.loaders import utils_dunder  # pylint: disable=import-outside-toplevel

    return utils_dunder(["redis_common"])["redis_common.listens_as"](host, port, 3)
