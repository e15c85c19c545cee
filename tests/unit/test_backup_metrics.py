"""Backup metrics for node-exporter's textfile collector (_utils/redis_backup_metrics.py), on
backup metadata as redis_backup keeps it; the lab checks the file after a real backup."""

import os
import stat

from support.lab import ROOT
from support.loaders import load_file, utils_dunder

metrics = load_file("redis_backup_metrics_under_test", ROOT / "_utils" / "redis_backup_metrics.py")

RDB_NEW = {"type": "rdb", "timestamp": "2026-12-06T03:00:01+00:00", "size": 1048576, "verified": True,
           "duration_seconds": 2.5}
RDB_OLD = {"type": "rdb", "timestamp": "2026-12-05T03:00:01+00:00", "size": 1000, "verified": True,
           "duration_seconds": 2.0}
AOF_DAMAGED = {"type": "aof", "timestamp": "2026-12-06T04:00:00+00:00", "size": 5, "damaged": True}


def samples(text):
    return {line.rsplit(" ", 1)[0]: line.rsplit(" ", 1)[1] for line in text.splitlines() if not line.startswith("#")}


def test_the_newest_good_backup_of_each_type_and_the_counts():
    text = metrics.textfile([AOF_DAMAGED, RDB_NEW, RDB_OLD])

    assert samples(text) == {
        'redis_backup_last_success_timestamp_seconds{type="rdb"}': "1796526001",
        'redis_backup_last_duration_seconds{type="rdb"}': "2.5",
        'redis_backup_last_size_bytes{type="rdb"}': "1048576",
        'redis_backup_last_verified{type="rdb"}': "1",
        'redis_backup_good_count{type="rdb"}': "2",
        'redis_backup_good_count{type="aof"}': "0",
    }
    assert "# TYPE redis_backup_last_success_timestamp_seconds gauge" in text.splitlines()


def test_an_unverified_backup_says_so_and_no_backup_gives_counts_only():
    assert samples(metrics.textfile([dict(RDB_NEW, verified=False)]))['redis_backup_last_verified{type="rdb"}'] == "0"
    assert samples(metrics.textfile([])) == {'redis_backup_good_count{type="rdb"}': "0",
                                             'redis_backup_good_count{type="aof"}': "0"}


def test_the_file_is_replaced_whole_and_readable_by_node_exporter(tmp_path):
    (tmp_path / "redis_backup.prom").symlink_to(tmp_path / "elsewhere")
    backup = load_file("redis_backup_metrics_writer", ROOT / "_modules" / "redis_backup.py")
    backup.__utils__ = utils_dunder(["redis_common", "redis_backup_metrics"])
    backup.__pillar__ = {"redis": {"monitoring": {"exporter": True}}}
    path = tmp_path / "redis_backup.prom"

    backup._publish_metrics(str(tmp_path / "no-backups"), path=str(path))
    backup._publish_metrics(str(tmp_path / "no-backups"), path=str(tmp_path / "missing" / "redis_backup.prom"))

    assert not os.path.islink(path) and not (tmp_path / "elsewhere").exists()
    assert path.read_text() == metrics.textfile([])
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    assert sorted(os.listdir(tmp_path)) == ["redis_backup.prom"]
