"""
The host-level checks of a converged ``state.apply redis``, each made with one cheap
look at the host, and Salt's own state doing the work whenever that look finds anything
to change.

A no-op apply runs these on every Redis host at once; Salt's states spend most of its
time on them: ``pkg.installed`` lists every installed package, ``service.running`` and
``service.dead`` ask systemd five times, and a ``cmd.run`` with ``unless`` costs seconds.
Here:

- :func:`packages_installed` asks the package database for the named packages only
  (``dpkg-query``, or ``lowpkg.list_pkgs``), else ``pkg.installed``;
- :func:`service_running` / :func:`service_dead` read the unit's state with one
  ``systemctl show`` (systemd hosts), else ``service.running`` / ``service.dead``
  (which also do everything under ``watch``: :func:`mod_watch`);
- :func:`nft_table_loaded` / :func:`nft_table_absent` list the nftables table once and
  load (or delete) it only when it is missing (or there);
- :func:`schedule_present` compares the job with the minion's schedule as this job's
  options hold it (``redis_node.scheduled_jobs``), else ``schedule.present`` (which asks
  the running salt-minion over the event bus and parses ``_schedule.conf``).

Each answers "no change" only when what it looked at is exactly the converged state;
anything else (a stopped or disabled unit, a unit systemd must reload, an unknown unit, a
missing package, another init system) goes to Salt's state, ``test=True`` included.
"""

import logging
import subprocess

import salt.utils.path
import salt.utils.systemd

__virtualname__ = "redis_host"

log = logging.getLogger(__name__)

SYSTEMCTL_TIMEOUT = 30


def __virtual__():
    return __virtualname__


def _ret(name):
    return {"name": name, "result": True, "changes": {}, "comment": ""}


# ---------------------------------------------------------------- packages


def _installed(pkgs):
    """The names of ``pkgs`` that the package database says are installed."""
    dpkg_query = salt.utils.path.which("dpkg-query")
    if dpkg_query:  # Debian: straight, not through cmd.run (as much again as the query)
        try:
            listed = subprocess.run(
                [dpkg_query, "-f=${db:Status-Status}\t${binary:Package}\n", "-W", "--", *pkgs],
                capture_output=True, text=True, timeout=60, check=False,
            ).stdout
        except (OSError, subprocess.SubprocessError) as exc:
            log.debug("dpkg-query %s: %s", pkgs, exc)
            return set()
        # a package dpkg does not know is on stderr, missing here
        rows = [line.split("\t") for line in listed.splitlines()]
        return {row[1].split(":")[0] for row in rows if len(row) == 2 and row[0] == "installed"}
    try:
        listed = __salt__["lowpkg.list_pkgs"](*pkgs)
    except Exception as exc:  # pylint: disable=broad-except
        log.debug("lowpkg.list_pkgs %s: %s", pkgs, exc)
        return set()
    # an error is a string
    return {package.split(":")[0] for package in listed} if isinstance(listed, dict) else set()


def packages_installed(name, pkgs=None, **kwargs):
    """
    ``pkg.installed`` of ``pkgs`` (names, no versions; default: ``name``), checked first in
    the package database for those packages only: when every one is installed, nothing
    else runs.

    .. code-block:: yaml

        redis-packages-installed:
          redis_host.packages_installed:
            - pkgs: [redis-server, redis-tools]
    """
    pkgs = list(pkgs or [name])
    if not set(pkgs) - _installed(pkgs):
        ret = _ret(name)
        ret["comment"] = "All specified packages are already installed"
        return ret
    return __states__["pkg.installed"](name=name, pkgs=pkgs, **kwargs)


# ---------------------------------------------------------------- services


def _unit_state(name):
    """``{LoadState, ActiveState, UnitFileState, NeedDaemonReload}`` of a systemd unit, or
    None when this host does not run systemd or systemctl does not answer."""
    if not salt.utils.systemd.booted(__context__):
        return None
    systemctl = salt.utils.path.which("systemctl")
    if not systemctl:
        return None
    properties = ("LoadState", "ActiveState", "UnitFileState", "NeedDaemonReload")
    try:
        shown = subprocess.run(
            [systemctl, "show", "--property=" + ",".join(properties), "--", name],
            capture_output=True, text=True, timeout=SYSTEMCTL_TIMEOUT, check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        log.debug("systemctl show %s: %s", name, exc)
        return None
    if shown.returncode != 0:
        return None
    values = dict(line.split("=", 1) for line in shown.stdout.splitlines() if "=" in line)
    return values if all(key in values for key in properties) else None


def _converged_or_salt(name, converged, wanted, enable, kwargs):
    """No change when ``converged``, else Salt's ``service.<wanted>`` with the arguments."""
    if converged:
        ret = _ret(name)
        ret["comment"] = f"The service {name} is already {wanted}"
        return ret
    if enable is not None:
        kwargs["enable"] = enable
    return __states__[f"service.{wanted}"](name=name, **kwargs)


def service_running(name, enable=None, **kwargs):
    """
    ``service.running``, checked first with one ``systemctl show``: an active unit
    (enabled, when ``enable`` is True) that systemd need not reload is left alone.
    Other arguments (``init_delay``, ``reload``...) go to ``service.running`` and, under
    ``watch``, to ``service.mod_watch``.
    """
    unit = _unit_state(name)
    converged = (
        unit is not None
        and unit["LoadState"] == "loaded"
        and unit["ActiveState"] == "active"
        and unit["NeedDaemonReload"] == "no"
        and (enable is not True or unit["UnitFileState"] == "enabled")
    )
    return _converged_or_salt(name, converged, "running", enable, kwargs)


def service_dead(name, enable=None, **kwargs):
    """
    ``service.dead``, checked first with one ``systemctl show``: an inactive (or failed)
    unit (disabled or masked, when ``enable`` is False) is left alone.
    """
    unit = _unit_state(name)
    converged = (
        unit is not None
        and unit["LoadState"] in ("loaded", "masked")
        and unit["ActiveState"] in ("inactive", "failed")
        and (enable is not False or unit["UnitFileState"] in ("disabled", "masked"))
    )
    return _converged_or_salt(name, converged, "dead", enable, kwargs)


def mod_watch(name, sfun=None, **kwargs):
    """Under ``watch``: what ``service.mod_watch`` does for ``service.running`` /
    ``service.dead`` (reload or restart; stop)."""
    salt_sfun = {"service_running": "running", "service_dead": "dead"}.get(sfun)
    if salt_sfun is None:
        ret = _ret(name)
        ret.update(result=False, comment=f"redis_host.{sfun} has no watch action")
        return ret
    return __states__["service.mod_watch"](name, sfun=salt_sfun, **kwargs)


# ---------------------------------------------------------------- nftables


def _nft(*args):
    nft = salt.utils.path.which("nft") or "/usr/sbin/nft"
    try:
        done = subprocess.run([nft, *args], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return 127, str(exc)
    return done.returncode, (done.stderr or done.stdout).strip()


def nft_table_loaded(name, rules_file):
    """
    The nftables table ``name`` (``inet redis_salt``) is loaded: listed once; when it is
    missing (``nft flush ruleset`` since), ``nft -f rules_file`` loads it.
    """
    ret = _ret(name)
    code, _ = _nft("list", "table", *name.split())
    if code == 0:
        ret["comment"] = f"table {name} is loaded"
        return ret
    if __opts__.get("test"):
        ret.update(result=None, changes={"loaded": rules_file},
                   comment=f"table {name} is missing: nft -f {rules_file} would load it")
        return ret
    code, output = _nft("-f", rules_file)
    if code != 0:
        ret.update(result=False, comment=f"table {name} is missing and nft -f {rules_file} failed: {output}")
        return ret
    ret.update(changes={"loaded": rules_file}, comment=f"table {name} was missing: loaded from {rules_file}")
    return ret


def nft_table_absent(name):
    """The nftables table ``name`` is not loaded: listed once, deleted when it is there."""
    ret = _ret(name)
    code, _ = _nft("list", "table", *name.split())
    if code != 0:
        ret["comment"] = f"table {name} is not loaded"
        return ret
    if __opts__.get("test"):
        ret.update(result=None, changes={"deleted": name}, comment=f"table {name} would be deleted")
        return ret
    code, output = _nft("delete", "table", *name.split())
    if code != 0:
        ret.update(result=False, comment=f"nft delete table {name} failed: {output}")
        return ret
    ret.update(changes={"deleted": name}, comment=f"table {name} deleted")
    return ret


# ---------------------------------------------------------------- Salt's scheduler


def schedule_present(name, **kwargs):
    """
    ``schedule.present``, checked first against ``redis_node.scheduled_jobs``: a job there
    exactly as ``schedule.build_schedule_item`` makes it is left alone.
    """
    try:
        current = __salt__["redis_node.scheduled_jobs"]().get(name)
    except KeyError:  # our execution module not loadable here (redis-py missing)
        current = None
    if current is not None:
        wanted = __salt__["schedule.build_schedule_item"](name, **kwargs)
        if isinstance(wanted, dict) and wanted.get("result", True) is not False:
            wanted = dict(wanted)
            wanted.setdefault("enabled", True)
            if wanted == current:
                ret = _ret(name)
                ret["comment"] = f"Job {name} in correct state"
                return ret
    return __states__["schedule.present"](name, **kwargs)
