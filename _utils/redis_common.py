"""
What every Redis module of the deployment needs, in one place (Salt's ``_utils``; modules
reach it as ``__utils__["redis_common.<name>"]``):

- an authenticated redis-py client for a node, its password handed over in memory only;
- the root-only record of the password last accepted on this host (what a
  ``force_password_change`` logs in with);
- a one-line, password-free description of a redis-py error, and what kind of trouble it
  tells of (so a caller can decide whether a restart may help);
- polling a condition, bounded;
- writing a file's next version privately, before it is renamed into place.

:depends: redis (redis-py)
"""

import contextlib
import hashlib
import os
import socket
import ssl
import tempfile
import time

try:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    HAS_REDIS = True
except ImportError:
    HAS_REDIS = False

__virtualname__ = "redis_common"


def __virtual__():
    if not HAS_REDIS:
        return (False, "redis_common: the redis Python library (redis-py) is not installed")
    return __virtualname__


def client(settings, port=None, host="127.0.0.1", timeout=5, password=None, username=None):
    """A redis-py client for the node at ``host:port`` (default: ``settings``' own port), with
    the deployment's password from ``settings`` (pillar ``redis``) unless ``password`` (and
    ``username``, an ACL user's) is given.

    During a two-phase password rotation (``previous_password`` in ``settings``) a node not
    applied yet accepts only the previous password: the new one is tried first (one PING),
    and the previous one when the node refuses it. Likewise, with ``force_password_change``,
    the password last accepted on this host (:func:`remembered_password`).

    With TLS on (``tls`` in ``settings``: pillar ``redis:tls``) the client speaks TLS
    (:func:`tls_options`). A local server is spoken to in the protocol it speaks now
    (:func:`_loopback_tls`)."""
    port = int(port or settings.get("port", 6379))
    tls = tls_options(settings.get("tls"), host)
    if _loopback(host):
        tls = _loopback_tls(tls, host, port, timeout)

    def connect(secret):
        return redis.Redis(
            **tls,
            host=host,
            port=port,
            username=username,
            password=secret or None,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            decode_responses=True,
            # Our callers poll or decide themselves; redis-py's default retries would
            # stretch every timeout (and retry refused passwords) by seconds.
            retry=Retry(NoBackoff(), 0),
        )

    fallbacks = [] if password else _fallback_passwords(settings)
    if not fallbacks:
        return connect(password or settings.get("password"))
    candidates = [settings.get("password"), *fallbacks]
    for index, secret in enumerate(candidates):
        tried = connect(secret)
        try:
            tried.ping()
        except redis.RedisError as exc:
            if is_auth_failure(exc) and index < len(candidates) - 1:
                tried.close()
                continue
        return tried


def tls_options(tls, host):
    """redis-py's keyword arguments for a node of a deployment with TLS on (pillar
    ``redis:tls``: ``ca_file``, and ``cert_file``/``key_file`` where the caller may read
    the host's key; without them no client certificate is shown, which the servers allow),
    ``{}`` with TLS off. The server's certificate must come from the deployment's CA, and
    name ``host`` (a peer's IP address) unless ``host`` is this machine's loopback."""
    if not tls:
        return {}
    options = {"ssl": True, "ssl_ca_certs": tls["ca_file"], "ssl_cert_reqs": "required",
               "ssl_check_hostname": not _loopback(host)}
    if tls.get("cert_file") and tls.get("key_file"):
        options.update(ssl_certfile=tls["cert_file"], ssl_keyfile=tls["key_file"])
    return options


def _loopback(host):
    """This machine's loopback address: no certificate names it."""
    return str(host).startswith("127.")


# What a local client of a deployment whose pillar says plain TCP uses towards a local
# server that speaks TLS (one being switched back): the host's own server, over loopback,
# which no certificate names, while the pillar names no CA any more.
LOOPBACK_TLS = {"ssl": True, "ssl_cert_reqs": "none", "ssl_check_hostname": False}


def _loopback_tls(tls, host, port, timeout):
    """redis-py's TLS arguments towards the local server at ``port``, which may speak another
    protocol than the pillar says for a while: the package's server on a bare host (plain
    until its first restart with the deployment's settings), or one being switched between
    plain TCP and TLS (``redis_node.switch_tls``)."""
    speaks = listens_as(host, port, timeout)
    if tls and speaks == "plain":
        return {}
    if not tls and speaks == "tls":
        return dict(LOOPBACK_TLS)
    return tls


def _inline_ping(host, port, timeout):
    """``"answered"`` when a plain ``PING`` (no password sent) gets ``+PONG`` or an error,
    ``"closed"`` when the connection is closed at once (a TLS port takes it for a broken
    handshake), None when nothing answers (refused, or no answer within ``timeout``)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as probe:
            probe.sendall(b"PING\r\n")
            reply = probe.recv(64)
    except ConnectionResetError:
        return "closed"
    except OSError:
        return None
    if reply[:1] in (b"+", b"-"):
        return "answered"
    return "closed" if not reply else None


def protocol_change(to):
    """A switch to ``to`` (``tls`` or ``plain``, as ``listens_as`` names them) in a state's
    changes: ``{"old": ..., "new": ...}`` in words."""
    words = {"tls": "TLS", "plain": "plain TCP"}
    return {"old": words["plain" if to == "tls" else "tls"], "new": words[to]}


def listens_as(host, port, timeout=2):
    """What the server at ``host:port`` speaks: ``"plain"``, ``"tls"``, or None when nothing
    answers. A server that does not answer a plain PING within ``timeout`` is not asked
    again in TLS: a stopped or swapping server costs one ``timeout``, not two."""
    seen = _inline_ping(host, port, timeout)
    if seen == "answered":
        return "plain"
    if seen == "closed" and served_fingerprint(host, port, timeout) is not None:
        return "tls"
    return None


def served_fingerprint(host, port, timeout=2):
    """The SHA-256 of the certificate the TLS port at ``host:port`` serves (hex), or None where
    nothing answers TLS there. Only read, never trusted: nothing is sent. (A bare client
    context: ssl.create_default_context would load the system's CA store first, 50 ms of
    CPU here, for a certificate that is not verified.)"""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as raw:
            with context.wrap_socket(raw) as wrapped:
                return hashlib.sha256(wrapped.getpeercert(binary_form=True)).hexdigest()
    except (OSError, ssl.SSLError):
        return None


def pem_fingerprint(pem):
    """The SHA-256 of a PEM certificate (hex), as :func:`served_fingerprint` sees it served."""
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()


def redis_cli_tls(tls):
    """redis-cli's arguments for a deployment with TLS on (pillar ``redis:tls``), or []."""
    if not tls:
        return []
    return ["--tls", "--cacert", tls["ca_file"], "--cert", tls["cert_file"], "--key", tls["key_file"]]


def _fallback_passwords(settings):
    """What :func:`client` tries after the deployment's password: the previous one during a
    two-phase rotation; during a ``force_password_change`` the one last accepted on this host
    (a node not changed yet accepts only that)."""
    found = [settings["previous_password"]] if settings.get("previous_password") else []
    if settings.get("force_password_change"):
        for remembered in remembered_passwords((globals().get("__opts__") or {}).get("cachedir")):
            if remembered not in found and remembered != settings.get("password"):
                found.append(remembered)
    return found


def logins_refused(what, exc, dry_run):
    """The outcome of converging the logins of the local ``what`` ("server", "Sentinel") when
    it failed with redis-py's ``exc``: a dry run on a process that does not run the
    deployment's settings yet (a bare host's package server, refusing our password or down)
    says the apply gives it them first; anything else raises ``CommandExecutionError``."""
    # Imported here: the health script loads this file with a Python that has no Salt.
    from salt.exceptions import CommandExecutionError  # pylint: disable=import-outside-toplevel

    if dry_run and failure(exc) in ("auth", "refused"):
        return {"changed": True,
                "changes": {"logins": f"set once the {what} runs the deployment's settings"},
                "comment": f"the local {what} does not run the deployment's settings yet ({error_text(exc)})"}
    raise CommandExecutionError(f"logins of the local {what}: {error_text(exc)}") from None


def logins_converged(process, password, changes, comments, dry_run):
    """The outcome of converging the logins of the local ``process`` (``server-<port>``,
    ``sentinel-<port>``): ``{"changed", "changes", "comment"}``. After a real run, the
    password it now accepts is recorded for a later ``force_password_change``
    (:func:`remember_password`: Redis keeps only a hash)."""
    if not dry_run:
        remember_password((globals().get("__opts__") or {}).get("cachedir"), process, password)
    return {"changed": bool(changes), "changes": changes, "comment": "; ".join(comments)}


LOGIN_RECORDS = "redis_logins"


def _login_record(cachedir, process=None):
    directory = os.path.join(cachedir or "/var/cache/salt/minion", LOGIN_RECORDS)
    return os.path.join(directory, process) if process else directory


def remembered_password(cachedir, process):
    """The deployment's password that the local ``process`` (``server-<port>`` or
    ``sentinel-<port>``) last accepted (:func:`remember_password`), or None. Only a file owned
    by us that no one else may read counts; no link is followed."""
    try:
        descriptor = os.open(_login_record(cachedir, process), os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(descriptor, "rb") as handle:
        info = os.fstat(handle.fileno())
        if info.st_uid != os.geteuid() or info.st_mode & 0o077:
            return None
        return handle.read().decode("utf-8", "surrogateescape") or None


def remembered_passwords(cachedir):
    """Every password the local processes last accepted (:func:`remembered_password`), distinct."""
    try:
        processes = sorted(os.listdir(_login_record(cachedir)))
    except OSError:
        return []
    return list(dict.fromkeys(p for p in (remembered_password(cachedir, n) for n in processes) if p))


def remember_password(cachedir, process, password):
    """Keep ``password`` (the one the local ``process`` accepts now) in a root-only file under
    the minion's ``cachedir``: the one a later ``force_password_change`` logs in with, since
    Redis keeps only its hash. One file per process: a host's server may change before its
    Sentinel. Written (whole) only when it differs; returns whether it was."""
    if not password or remembered_password(cachedir, process) == password:
        return False
    path = _login_record(cachedir, process)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    replace_file(path, password, os.geteuid(), os.getegid(), 0o600)
    return True


def connector(host, port, timeout=2, tls=None):
    """A client factory ``connect(username, password)`` for the node at ``host:port``, for
    checks that try logins (``redis_acl.outgoing_login``); ``tls``: pillar ``redis:tls``.
    Defined here so that it runs in the utils loader's context wherever it is called from."""

    def connect(username, password):
        return client({"tls": tls}, int(port), host=host, timeout=timeout, username=username, password=password)

    return connect


def error_text(exc):
    """A one-line description of a redis-py error, safe to return (no password in it)."""
    return f"{type(exc).__name__}: {exc}"


def connection_refused(exc):
    """Nothing listens where we connected: the OS refused the connection."""
    seen = exc
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError):
            return True
        seen = seen.__cause__ or seen.__context__
    return "Connection refused" in str(exc)


def is_auth_failure(exc):
    """The server answers but refuses the deployment's password (or has none set)."""
    if isinstance(exc, redis.AuthenticationError):
        return True
    return isinstance(exc, redis.ResponseError) and str(exc).startswith(("NOAUTH", "WRONGPASS"))


def failure(exc):
    """What kind of trouble a redis-py error tells of, for callers that must decide whether a
    restart may help: ``refused`` (nothing listens), ``auth`` (the password is refused),
    ``loading``, ``busy`` (a script or module command holds the server), ``maxclients``,
    ``timeout`` (no answer in time: stopped, swapping, or blocked) or ``error``."""
    text = str(exc)
    if is_auth_failure(exc):
        return "auth"
    if isinstance(exc, redis.BusyLoadingError):
        return "loading"
    if isinstance(exc, redis.TimeoutError):
        return "timeout"
    if "max number of clients reached" in text:
        return "maxclients"
    if isinstance(exc, redis.ResponseError) and text.startswith("BUSY "):
        return "busy"
    if isinstance(exc, redis.ConnectionError) and connection_refused(exc):
        return "refused"
    return "error"


def wait(condition, timeout, interval=0.2):
    """Poll ``condition()`` until it returns something true or ``timeout`` seconds pass;
    return its last value."""
    deadline = time.monotonic() + float(timeout)
    while True:
        value = condition()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def replace_file(path, text, uid, gid, mode):
    """Put ``text`` at ``path`` whole (a reader sees the old file or the new one, never half):
    written privately next to it (``write_temporary``), then renamed over the name, which
    follows no symlink standing there."""
    temporary = write_temporary(path, text, uid, gid, mode)
    try:
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def write_temporary(path, text, uid, gid, mode):
    """A new file next to ``path`` holding ``text``: created with O_EXCL under a random name
    (mkstemp), owner and mode set through its descriptor (nothing a service user planted is
    written or chowned), fsynced. Returns its name; the caller renames or removes it."""
    directory, base = os.path.split(path)
    descriptor, temporary = tempfile.mkstemp(dir=directory or ".", prefix=f".{base}.")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(text.encode("utf-8", "surrogateescape"))
            handle.flush()
            os.fchown(handle.fileno(), uid, gid)
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    return temporary
