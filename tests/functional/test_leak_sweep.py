"""
The leak sweep (tests/support/leaks.py) can fail: each form of a fake secret planted in the
channels that exist without a lab (a file others can read, a process's argv, a process that
lives a moment, an event, a job's return, journal and ``systemctl show`` output) is found,
named by its form, and never printed; a secret's SHA-256 (what Redis stores) is not one; a
file only root and redis can read may hold the password.
"""

import grp
import hashlib
import json
import os
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
from support.lab import PASSWORD
from support.leaks import (
    FORM_NAMES,
    EventRecorder,
    ExecWatcher,
    Secrets,
    deployment_secrets,
    descendants,
    forms,
    process_tree_scope,
    redis_acl,
    regular_files,
    report,
    scan_event,
    scan_journal,
    scan_processes,
    scan_readable_files,
    scan_result,
    scan_unit_properties,
    unit_names,
)

# Both quotes, a backslash, a space, a '#' and a non-ASCII letter: four different spellings.
FAKE = "fake \"leak\" \\ it's #9 \u00e9"
SECRETS = Secrets({"fake": FAKE})
SHA = hashlib.sha256(FAKE.encode()).hexdigest()


def test_the_four_forms_differ():
    spelled = forms(FAKE)
    assert set(spelled) == set(FORM_NAMES)
    assert len(set(spelled.values())) == 4, spelled


def only_forms(findings):
    return {finding.form for finding in findings}


@pytest.mark.parametrize("form", FORM_NAMES)
def test_each_form_in_a_file_others_can_read_is_found(tmp_path, form):
    planted = tmp_path / "etc" / "redis" / "planted.conf"
    planted.parent.mkdir(parents=True)
    planted.write_text(f"requirepass {forms(FAKE)[form]}\n")
    planted.chmod(0o644)
    found = scan_readable_files(list(regular_files(tmp_path)), tmp_path, SECRETS, "h1", {0: "root"}, {0: "root"})
    assert [(f.channel, f.host, f.where, f.secret) for f in found] == [
        ("file", "h1", "/etc/redis/planted.conf (readable by others)", "fake")]
    assert form in found[0].form.split("/")
    assert FAKE not in report(found) and forms(FAKE)[form] not in report(found)


def test_who_can_read_decides(tmp_path):
    """Others-readable and another group's files count; root's, redis's and files behind a
    closed directory do not; an allowed reader may see its own secret only."""
    redis_gid = grp.getgrnam("redis").gr_gid
    other_gid = grp.getgrnam("adm").gr_gid
    monitoring_gid = grp.getgrnam("nogroup").gr_gid
    groups = {0: "root", redis_gid: "redis", other_gid: "adm", monitoring_gid: "nogroup"}

    def plant(relative, mode, gid=0, text=f"x {FAKE} y"):
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        os.chown(path, 0, gid)
        path.chmod(mode)

    plant("root-only", 0o600)
    plant("redis-group", 0o640, redis_gid)
    plant("adm-group", 0o640, other_gid)
    plant("world", 0o644)
    plant("closed/world-inside", 0o644)
    (tmp_path / "closed").chmod(0o700)
    plant("monitoring/allowed", 0o640, monitoring_gid, text=f"{FAKE} and {SHA}")
    secrets = Secrets({"fake": FAKE, "monitor": "0" * 64}, allowed={"group nogroup": {"fake"}})
    plant("monitoring/other-secret", 0o640, monitoring_gid, text="0" * 64)
    found = scan_readable_files(list(regular_files(tmp_path)), tmp_path, secrets, "h1", {0: "root"}, groups)
    assert sorted(f.where for f in found) == [
        "/adm-group (readable by group adm)",
        "/monitoring/other-secret (readable by group nogroup)",
        "/world (readable by others)",
    ]


def test_the_sha256_of_a_secret_is_not_one(tmp_path):
    planted = tmp_path / "users.acl"
    planted.write_text(f"user default on #{SHA} ~* +@all\n")
    planted.chmod(0o644)
    assert not scan_readable_files([planted], tmp_path, SECRETS, "h1", {}, {})
    assert not scan_event("redis/acl", {"hash": f"#{SHA}", "sha256": SHA}, SECRETS)
    assert not scan_result(SimpleNamespace(stdout=SHA, stderr="", data={"passwords": [SHA]}), SECRETS, "job")


def test_a_secret_in_a_file_name_is_redacted(tmp_path):
    secret = "ab" * 32
    (tmp_path / f"dump-{secret}.txt").write_text(secret)
    (tmp_path / f"dump-{secret}.txt").chmod(0o644)
    found = scan_readable_files(list(regular_files(tmp_path)), tmp_path, Secrets({"hex": secret}), "h1", {}, {})
    assert found and all(secret not in f.where for f in found), found
    assert secret not in report(found)


@pytest.fixture
def processes():
    started = []

    def start(*argv):
        process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", *argv])
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()
        process.wait()


def wait_for_argv(pid, expected):
    deadline = time.monotonic() + 5
    while expected not in open(f"/proc/{pid}/cmdline", "rb").read():
        assert time.monotonic() < deadline, "the process never showed its argv"
        time.sleep(0.01)


def test_each_form_in_a_process_argv_is_found(processes):
    started = {form: processes("--token", text) for form, text in forms(FAKE).items()}
    hashed = processes("--hash", SHA)
    for process in [*started.values(), hashed]:
        wait_for_argv(process.pid, b"--")
    for form, process in started.items():
        found = scan_processes([process.pid], SECRETS, "h1")
        assert len(found) == 1 and form in found[0].form.split("/"), (form, found)
        assert found[0].where.startswith(f"pid {process.pid} (")
    assert not scan_processes([hashed.pid], SECRETS, "h1")
    mine = descendants(os.getpid())
    assert {process.pid for process in [*started.values(), hashed]} <= set(mine)
    assert len(scan_processes(mine, SECRETS, "test")) == 4


def test_a_process_that_lives_a_moment_is_seen():
    """The exec watcher reads the argv of a process that exits before any sweep could."""
    with ExecWatcher(SECRETS, process_tree_scope({os.getpid(): "test"})) as watcher:
        for text in [*forms(FAKE).values(), SHA]:
            subprocess.run([sys.executable, "-c", "import time; time.sleep(0.2)", text], check=True)
        subprocess.run(["sh", "-c", f"exec {sys.executable} -c 'pass' {SHA}"], check=True)
    assert watcher.execs >= 6
    assert only_forms(watcher.findings) == set(FORM_NAMES), watcher.findings
    assert all(f.channel == "argv" and f.host == "test" and "short-lived" in f.where for f in watcher.findings)


def test_each_form_in_an_event_is_found():
    for form, text in forms(FAKE).items():
        found = scan_event("redis/backup/it1/finished", {"data": {"nested": [f"x{text}y"]}, "_stamp": "now"},
                           SECRETS)
        assert [f.where for f in found] == ["event redis/backup/it1/finished"]
        assert form in found[0].form.split("/")
    assert scan_event(f"redis/leak/{FAKE}", {}, SECRETS)[0].where == "event tag"


def test_the_event_recorder_scans_what_the_bus_carried():
    events = [SimpleNamespace(tag="salt/job/1/ret/it1", full_data={"return": {"comment": f"pw {FAKE}"}}),
              SimpleNamespace(tag="redis/health/it1", full_data={"status": "OK", "sha": SHA})]
    listener = SimpleNamespace(get_events=lambda patterns, after_time: list(events))
    with EventRecorder(listener, SimpleNamespace(id="m"), SECRETS, settle_timeout=0) as recorder:
        pass
    assert recorder.events == 2
    assert [(f.channel, f.where, f.form) for f in recorder.findings] == [("event", "event salt/job/1/ret/it1", "raw")]


def test_each_form_in_a_job_return_is_found():
    for form, text in forms(FAKE).items():
        result = SimpleNamespace(stdout=json.dumps({"it1": "ok"}), stderr=f"warning {text}",
                                 data={"it1": {"comment": "fine"}})
        found = scan_result(result, SECRETS, "state.apply")
        assert [f.where for f in found] == ["state.apply (stderr)"] and form in found[0].form.split("/")
    # Parsed data is looked at string by string: the raw form, where stdout shows JSON.
    data = {"it1": {"changes": {"requirepass": FAKE}}}
    found = scan_result(SimpleNamespace(stdout=json.dumps(data), stderr="", data=data), SECRETS, "state.apply")
    assert {(f.where, f.form) for f in found} == {("state.apply (stdout)", "json"), ("state.apply (data)", "raw")}


def test_journal_and_unit_properties_are_scanned():
    entries = [
        {"MESSAGE": "started", "_SYSTEMD_UNIT": "redis-server.service", "_CMDLINE": f"redis-cli -a {FAKE}"},
        {"MESSAGE": list(f"binary {FAKE}".encode()), "SYSLOG_IDENTIFIER": "salt-minion"},
        {"MESSAGE": f"hash {SHA}", "_SYSTEMD_UNIT": "salt-minion.service"},
    ]
    found = scan_journal("\n".join(json.dumps(entry) for entry in entries), SECRETS, "h1")
    assert sorted((f.where, f.form) for f in found) == [
        ("journalctl (redis-server.service), field _CMDLINE", "raw"),
        ("journalctl (salt-minion), field MESSAGE", "raw"),
    ]
    show = (f"Id=a.service\nEnvironment=X=1\n\nId=b.service\nEnvironment=REDIS_PASSWORD={forms(FAKE)['json']}\n\n"
            f"Id=c.service\nDescription={SHA}\n")
    found = scan_unit_properties(show, SECRETS, "h1")
    assert [(f.channel, f.where, f.form) for f in found] == [("systemctl show", "b.service", "json")]
    units = "\u25cf redis-server.service loaded failed failed Advanced key-value store\nssh.socket loaded active\n"
    files = "redis-server.service enabled enabled\nredis-server@.service disabled enabled\n"
    assert unit_names(units, files) == ["redis-server.service", "ssh.socket"]


def test_every_secret_of_a_deployment():
    """The password, the previous one, the ACL users' (not their hashes) and each internal
    user's derived from both, for every user of redis_acl.USERS."""
    document = {"cache": {"redis": {
        "password": "${REDIS_PASSWORD}",
        "previous_password": "old ${OLD}",
        "acl": {"users": [{"name": "app", "password": "${APP}", "rules": "+@read"},
                          {"name": "hashed", "password_sha256": SHA, "rules": "+@read"}]},
        "monitoring": {"group": "nagios"},
        "backup": {"dir": "/srv/backups", "copy_to": "/mnt/gluster"},
    }}}
    secrets = deployment_secrets(document, {"REDIS_PASSWORD": PASSWORD, "OLD": "pw", "APP": "app-pw"})
    acl = redis_acl()
    expected = {"password": PASSWORD, "previous_password": "old pw", "acl user app": "app-pw"}
    for user in acl.USERS:
        expected[f"derived {user}"] = acl.derived_password(PASSWORD, user)
        expected[f"derived {user} (previous)"] = acl.derived_password("old pw", user)
    assert secrets.values == expected
    assert len(acl.USERS) >= 2
    assert secrets.allowed == {"group nagios": {f"derived {acl.MONITORING_USER}",
                                                f"derived {acl.MONITORING_USER} (previous)"}}
    assert secrets.backup_dirs == ("/srv/backups", "/mnt/gluster")
    lab = deployment_secrets({"cache": {"redis": {"password": "${REDIS_PASSWORD}"}}})
    assert lab.values["password"] == PASSWORD and "previous_password" not in lab.values
    assert lab.backup_dirs == ("/var/backups/redis",)
