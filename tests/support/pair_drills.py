"""What every Sentinel pair of a lab of its own must survive, whatever its server and
distribution (test_valkey_sentinel.py on Valkey 8.1, test_upgrade.py on Redis 8.0): a dead
master host under a WAIT 1 writer, and a backup set restored after FLUSHALL."""

from redis.sentinel import Sentinel
from support.lab import SENTINEL_PORT, wait_for_minions
from support.sentinel import WaitWriter
from support.states import states_with_changes
from support.waits import wait_until


def _sentinel_master(pair):
    return Sentinel([(ip, SENTINEL_PORT) for ip in pair.everyone.values()], sentinel_kwargs={
        "password": pair.password}, password=pair.password, decode_responses=True).master_for(pair.master_name)


def dead_master_host_fails_over(lab, cli, pair, prefix):
    """``lab kill`` of the master's host under a WAIT 1 writer: its replica is promoted with
    every write it confirmed; the old master boots back as its replica, writes are confirmed
    again, and the next apply changes nothing and reverts nothing."""
    old = pair.current_master()
    new = next(h for h in pair.servers if h != old)
    wait_until(lambda: pair.server(new).info("replication")["master_link_status"] == "up", 30, f"{new} replicating")
    wait_until(lambda: pair.sentinels_agree_on(old), 30, f"the Sentinels agree on {old}")
    writer = WaitWriter([(ip, SENTINEL_PORT) for ip in pair.everyone.values()], pair.password, prefix,
                        pair.master_name)
    writer.start()
    wait_until(lambda: len(writer.acknowledged) >= 100, 30, "100 writes confirmed by the replica")

    lab.kill(old)

    wait_until(lambda: pair.server(new).info("replication")["role"] == "master", 60, f"{new} promoted")
    confirmed = len(writer.acknowledged)
    assert writer.missing(pair.server(new)) == [], "writes the replica confirmed were lost"
    # WAIT 1 confirms nothing until the new master has a replica again: the old one, booted.
    lab.boot(old)
    wait_for_minions(cli, [old])
    wait_until(lambda: pair.server(old).info("replication")["role"] == "slave"
               and pair.server(old).info("replication")["master_link_status"] == "up", 60, f"{old} back as a replica")
    wait_until(lambda: len(writer.acknowledged) >= confirmed + 100, 60, "writes confirmed again")
    writer.finish()
    assert writer.errors == [] and writer.missing(pair.server(new)) == []
    again = cli.run("state.apply", "redis", minion_tgt="*")
    assert again.returncode == 0, again.stdout
    assert states_with_changes(again) == []
    assert pair.current_master() == new


def backup_set_restores_every_key(master, pair, prefix):
    """300 keys the replica confirmed, `salt-run redis_backup.run`, FLUSHALL on the master,
    `salt-run redis_backup.restore set=...`: every key is back through the Sentinels."""
    client = _sentinel_master(pair)
    keys = {f"{prefix}:set:{n}": str(n) for n in range(300)}
    client.mset(keys)
    assert client.execute_command("WAIT", 1, 2000) == 1
    run = master.salt_run_cli(timeout=600).run("redis_backup.run", "type=rdb")
    assert run.returncode == 0, run.stdout
    assert run.data["status"] == "complete", run.data

    pair.server(pair.current_master()).flushall()
    restored = master.salt_run_cli(timeout=600).run("redis_backup.restore", f"set={run.data['set_id']}", "force=True")
    assert restored.returncode == 0, restored.stdout

    wait_until(lambda: pair.sentinels_agree_on(pair.current_master()), 60, "the Sentinels agree again")
    assert _sentinel_master(pair).mget(list(keys)) == list(keys.values())
