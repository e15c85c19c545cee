"""
Backup metrics for Prometheus (Salt's ``_utils``; modules reach them as
``__utils__["redis_backup_metrics.<name>"]``): what no exporter knows about our backups, in
node-exporter's textfile format, written after each backup when
``cache.redis.monitoring.exporter`` is on. Pure functions over backup metadata; the module
writes the file whole (``redis_common.replace_file``: node-exporter never reads half of it).
"""

import datetime

__virtualname__ = "redis_backup_metrics"

TYPES = ("rdb", "aof")
METRICS = (
    ("redis_backup_last_success_timestamp_seconds", "gauge",
     "When the newest good backup of this type was taken (Unix time)."),
    ("redis_backup_last_duration_seconds", "gauge", "How long the newest good backup of this type took."),
    ("redis_backup_last_size_bytes", "gauge", "Stored size of the newest good backup of this type."),
    ("redis_backup_last_verified", "gauge",
     "1 when the newest good backup of this type was loaded into a throwaway server and counted."),
    ("redis_backup_good_count", "gauge", "Good backups of this type kept on this node."),
)


def __virtual__():
    return __virtualname__


def _timestamp(value):
    if isinstance(value, datetime.datetime):
        moment = value
    else:
        try:
            moment = datetime.datetime.fromisoformat(str(value))
        except ValueError:
            return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.timestamp()


def _number(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _sample(value):
    """A sample value in full (``%g`` would print a Unix time as 1.79653e+09)."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def textfile(backups):
    """The metrics of ``backups`` (metadata dicts, newest first, as ``redis_backup`` keeps them:
    ``type``, ``timestamp``, ``size``, ``verified``, ``duration_seconds``, ``damaged``), damaged
    ones left out. A type without a good backup has only its count (0): an alert on the
    timestamp's absence or age then fires."""
    lines = []
    values = {name: [] for name, _, _ in METRICS}
    for kind in TYPES:
        good = [b for b in backups if b.get("type") == kind and not b.get("damaged")]
        values["redis_backup_good_count"].append((kind, len(good)))
        if not good:
            continue
        newest = good[0]
        for name, value in (("redis_backup_last_success_timestamp_seconds", _timestamp(newest.get("timestamp"))),
                            ("redis_backup_last_duration_seconds", _number(newest.get("duration_seconds"))),
                            ("redis_backup_last_size_bytes", _number(newest.get("size"))),
                            ("redis_backup_last_verified", 1 if newest.get("verified") else 0)):
            if value is not None:
                values[name].append((kind, value))
    for name, kind_of_metric, description in METRICS:
        if not values[name]:
            continue
        lines += [f"# HELP {name} {description}", f"# TYPE {name} {kind_of_metric}"]
        lines += [f'{name}{{type="{kind}"}} {_sample(value)}' for kind, value in values[name]]
    return "\n".join(lines) + "\n"
