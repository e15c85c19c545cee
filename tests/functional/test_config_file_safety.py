"""config_included runs as root in a directory the redis user can write (/etc/redis is
redis:redis 2770: CONFIG REWRITE needs that). Whatever a compromised redis account plants
there, root must not write, chown, chmod or read another file through it.

The tests play the redis user as root does not: a directory owned by redis, and links
that redis "planted" (created, then handed to redis with lchown), pointing at a root-owned
file outside. They check that file afterwards, as an operator would: content, owner, mode.
And when Redis rewrites its file while Salt prepares its version, no line Redis wrote is lost.
"""

import grp
import os
import pwd
import stat
import threading

import pytest
from conftest import PASSWORD, redis_quote

SECRET = "root's own file: not for the redis user\n"


@pytest.fixture(scope="module")
def redis_ids():
    """uid and gid of the machine's redis user, which the deployment's files belong to."""
    if os.geteuid() != 0:
        pytest.fail("these tests play root and the redis user: run them as root (make functional)", pytrace=False)
    try:
        return pwd.getpwnam("redis").pw_uid, grp.getgrnam("redis").gr_gid
    except KeyError:
        pytest.fail("no redis user or group: install Debian's redis-server (make setup)", pytrace=False)


@pytest.fixture
def etc_redis(tmp_path, redis_ids):
    """A directory like /etc/redis: owned by redis, group-writable, setgid."""
    directory = tmp_path / "etc-redis"
    directory.mkdir()
    os.chown(directory, *redis_ids)
    os.chmod(directory, 0o2770)
    return directory


@pytest.fixture
def outside(tmp_path):
    """A root-owned file outside the redis directory; returns a function reading its state."""
    path = tmp_path / "root-only" / "secret"
    path.parent.mkdir()
    path.write_text(SECRET)
    os.chown(path, 0, 0)
    os.chmod(path, 0o600)

    def state():
        info = os.lstat(path)
        return path.read_text(), info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode), info.st_nlink

    state.path = path
    state.before = state()
    return state


def redis_rewrites_after_salt_wrote(state, rewrite):
    """``rewrite(path)`` (Redis rewriting its main file ``path``) runs each time, right after
    ``state`` wrote its new version to a temporary file next to it and before it checks that
    the main file is unchanged: the state module's ``__utils__`` entry, wrapped."""
    write_temporary = state.__utils__["redis_common.write_temporary"]

    def write_temporary_then_rewrite(path, *args, **kwargs):
        temporary = write_temporary(path, *args, **kwargs)
        try:
            rewrite(path)
        except BaseException:
            os.unlink(temporary)
            raise
        return temporary

    state.__utils__ = {**state.__utils__, "redis_common.write_temporary": write_temporary_then_rewrite}


def plant_symlink(link, target, redis_ids):
    """What the redis user can do in its directory: a symlink of its own."""
    os.symlink(target, link)
    os.lchown(link, *redis_ids)


def run(config_state, main, settings=None):
    include = main.parent.parent / "salt" / "redis-server.conf"
    return config_state.config_included(
        str(main), str(include), {"maxclients": 1000} if settings is None else settings, user="redis", group="redis"
    )


def converged_text(main):
    """A main file config_included has nothing to change in (for these settings)."""
    include = main.parent.parent / "salt" / "redis-server.conf"
    return (
        f"maxclients 1000\nrequirepass {redis_quote(PASSWORD)}\nmasterauth {redis_quote(PASSWORD)}\n"
        f"include {include}\n"
    )


@pytest.mark.parametrize("target_content", ["foreign", "converged"])
@pytest.mark.parametrize("test_mode", [False, True], ids=["apply", "test-mode"])
def test_main_file_as_symlink_is_refused(
    etc_redis, outside, redis_ids, config_state, target_content, test_mode, no_password
):
    """A symlink at redis.conf: root neither copies what it leads to into a redis-readable
    file, nor rewrites it, nor chowns/chmods it (a "converged" target needs only owner/mode)."""
    main = etc_redis / "redis.conf"
    if target_content == "converged":
        outside.path.write_text(converged_text(main))
        outside.before = outside()
    plant_symlink(main, outside.path, redis_ids)
    config_state.__opts__["test"] = test_mode

    ret = run(config_state, main)

    assert ret["result"] is False
    assert ret["changes"] == {}
    assert "is a symbolic link" in ret["comment"]
    assert outside() == outside.before
    assert os.readlink(main) == str(outside.path)
    assert sorted(os.listdir(etc_redis)) == ["redis.conf"]
    no_password(ret)


@pytest.mark.parametrize("planted", ["redis.conf.salt-tmp", ".redis.conf.salt-tmp"])
def test_planted_temporary_names_are_not_followed(etc_redis, outside, redis_ids, config_state, planted):
    """Earlier versions wrote redis.conf.salt-tmp, following a symlink planted there."""
    main = etc_redis / "redis.conf"
    main.write_text("# Redis's own file\nreplicaof 10.0.0.1 6379\n")
    os.chown(main, *redis_ids)
    plant_symlink(etc_redis / planted, outside.path, redis_ids)

    ret = run(config_state, main)

    assert ret["result"] is True, ret["comment"]
    assert outside() == outside.before
    assert os.readlink(etc_redis / planted) == str(outside.path)
    info = os.lstat(main)
    assert stat.S_ISREG(info.st_mode)
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (*redis_ids, 0o640)
    lines = main.read_text().splitlines()
    assert "replicaof 10.0.0.1 6379" in lines
    assert lines[-1].startswith("include ")
    assert sorted(os.listdir(etc_redis)) == sorted(["redis.conf", planted])


def test_hard_linked_main_file_is_refused(etc_redis, outside, config_state):
    """A hard link is one more name for root's file (where fs.protected_hardlinks is off)."""
    main = etc_redis / "redis.conf"
    outside.path.write_text(converged_text(main))
    outside.before = outside()
    os.link(outside.path, main)
    before = outside()

    ret = run(config_state, main)

    assert ret["result"] is False
    assert "2 hard links" in ret["comment"]
    assert outside() == before


def test_fifo_at_main_file_is_refused_without_blocking(etc_redis, redis_ids, config_state):
    main = etc_redis / "redis.conf"
    os.mkfifo(main)
    os.lchown(main, *redis_ids)
    returned = []
    thread = threading.Thread(target=lambda: returned.append(run(config_state, main)), daemon=True)

    thread.start()
    thread.join(5)

    if thread.is_alive():
        os.close(os.open(main, os.O_WRONLY | os.O_NONBLOCK))  # let the blocked open return
        thread.join(5)
        pytest.fail("config_included blocked on a FIFO planted at the main file")
    assert returned[0]["result"] is False
    assert "not a regular file" in returned[0]["comment"]


def test_owner_and_mode_are_put_back_on_the_file_itself(etc_redis, redis_ids, config_state):
    """CONFIG REWRITE may leave the file 0644: fixed on the checked file, nothing else."""
    main = etc_redis / "redis.conf"
    main.write_text(converged_text(main))
    os.chmod(main, 0o644)

    ret = run(config_state, main)

    assert ret["result"] is True, ret["comment"]
    assert ret["changes"] == {"mode": "0640", "owner": "redis:redis"}
    info = os.lstat(main)
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (*redis_ids, 0o640)


def test_a_line_redis_writes_meanwhile_is_kept(fresh_redis_server, redis_node_state, closed_port, no_password):
    """The real server rewrites its file (REPLICAOF + CONFIG REWRITE, as after a failover)
    after Salt read it and before Salt replaces it: Salt reads it again and keeps the line."""
    server = fresh_redis_server
    user, group = pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name
    calls = []

    def redis_rewrites_meanwhile(path):
        calls.append(path)
        if len(calls) == 1:
            client = server.client()
            client.replicaof("127.0.0.1", closed_port)
            client.config_rewrite()

    redis_rewrites_after_salt_wrote(redis_node_state, redis_rewrites_meanwhile)

    ret = redis_node_state.config_included(
        str(server.main_conf), str(server.salt_conf), dict(server.settings), user=user, group=group
    )

    assert ret["result"] is True, ret["comment"]
    assert len(calls) == 2
    lines = [line for line in server.main_conf.read_text().splitlines() if line and not line.startswith("#")]
    assert f"replicaof 127.0.0.1 {closed_port}" in lines
    assert lines[-1] == f"include {server.salt_conf}"
    assert lines.count(f"include {server.salt_conf}") == 1
    assert [name for name in os.listdir(server.main_conf.parent) if name.startswith(".redis.conf.")] == []
    no_password(ret)


def test_gives_up_when_the_file_keeps_changing(etc_redis, redis_ids, config_state):
    main = etc_redis / "redis.conf"
    main.write_text("# Redis's own file\n")
    os.chown(main, *redis_ids)
    appended = []

    def redis_writes_every_time(path):
        appended.append(f"# rewrite {len(appended)}")
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(appended[-1] + "\n")

    redis_rewrites_after_salt_wrote(config_state, redis_writes_every_time)

    ret = run(config_state, main)

    assert ret["result"] is False
    assert ret["changes"] == {}
    assert "changed while Salt rewrote it, 5 times" in ret["comment"]
    assert main.read_text().splitlines() == ["# Redis's own file", *appended]
    assert os.listdir(etc_redis) == ["redis.conf"]
