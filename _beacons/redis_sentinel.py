"""
Turn the local Redis Sentinel's pub/sub events into Salt events on the master's bus.

The beacon keeps one subscription to the local Sentinel (``PSUBSCRIBE *``) across its
calls, drains what arrived at every call, and sends each event of interest with
``event.send`` (to the master) under an exact tag: ``+sdown`` becomes
``redis/sentinel/sdown``, ``-sdown`` ``redis/sentinel/-sdown``, ``+switch-master``
``redis/sentinel/switch-master``, and so on. (Events a beacon *returns* get Salt's
``salt/beacon/<minion>/<beacon>/`` prefix; these do not.)

Every Sentinel announces a new master (``+switch-master``), but only the Sentinel that led
the failover published ``+elected-leader`` for it first. So ``redis/sentinel/switch-master``
is sent once per failover: by the minion whose Sentinel led it.

.. code-block:: yaml

    beacons:
      redis_sentinel:
        - interval: 2                  # seconds between drains (Salt's loop_interval is 1)
        # optional:
        # - port: 26379                # default: pillar redis:sentinel_port
        # - config_file: /etc/redis/sentinel.conf   # password fallback when pillar has none
        # - events: [+switch-master, +sdown, -sdown, +odown, -odown]

Do not set ``disable_during_state_run``: a failover during a state run would be missed.

:depends: redis (redis-py)
"""

import logging

import salt.utils.beacons

try:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    HAS_REDIS = True
except ImportError:
    HAS_REDIS = False

log = logging.getLogger(__name__)

__virtualname__ = "redis_sentinel"

TAG_PREFIX = "redis/sentinel/"
DEFAULT_EVENTS = (
    "+switch-master",
    "+sdown",
    "-sdown",
    "+odown",
    "-odown",
    "+failover-end",
    "+failover-end-for-timeout",
    "-failover-abort-no-good-slave",
    "+tilt",
    "-tilt",
)
# Options Salt's beacon machinery adds or consumes itself.
SALT_OPTIONS = ("interval", "enabled", "disable_during_state_run", "beacon_module", "run_once", "_beacon_name")
OPTIONS = ("host", "port", "config_file", "events", "max_messages")
MAX_MESSAGES = 10000


def __virtual__():
    if not HAS_REDIS:
        return (False, "redis_sentinel beacon: the redis Python library (redis-py) is not installed")
    return __virtualname__


def validate(config):
    """
    Validate the beacon configuration: a list of one-key dicts; ``port`` an integer,
    ``events`` a list of Sentinel event names (``+sdown``, ``-odown``, ``+switch-master``...).
    """
    if not isinstance(config, list) or not all(isinstance(item, dict) for item in config):
        return False, "Configuration for redis_sentinel beacon must be a list of dicts."
    options = salt.utils.beacons.list_to_dict(config)
    unknown = sorted(set(options) - set(OPTIONS) - set(SALT_OPTIONS))
    if unknown:
        return False, f"redis_sentinel beacon: unknown option(s) {', '.join(unknown)}; known: {', '.join(OPTIONS)}"
    if "port" in options:
        try:
            if not 0 < int(options["port"]) < 65536:
                raise ValueError
        except (TypeError, ValueError):
            return False, "redis_sentinel beacon: port must be a TCP port number"
    events = options.get("events", DEFAULT_EVENTS)
    if not isinstance(events, (list, tuple)) or not all(
        isinstance(e, str) and e[:1] in "+-" and len(e) > 1 for e in events
    ):
        return False, "redis_sentinel beacon: events must be a list of Sentinel event names like +sdown or -odown"
    return True, "Valid beacon configuration"


def _pillar_settings():
    try:
        return __pillar__.get("redis") or {}
    except NameError:  # no pillar in this loader
        return {}


def _unquote(text):
    """The first argument of a Redis config line's rest, as Redis reads it (double quotes,
    backslash escapes, \\xNN)."""
    text = text.strip()
    if not text.startswith('"'):
        return text.split()[0] if text else ""
    out, i = [], 1
    escapes = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "a": "\a"}
    while i < len(text) and text[i] != '"':
        char = text[i]
        if char == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt == "x" and i + 3 < len(text):
                try:
                    out.append(chr(int(text[i + 2 : i + 4], 16)))
                    i += 4
                    continue
                except ValueError:
                    pass
            out.append(escapes.get(nxt, nxt))
            i += 2
            continue
        out.append(char)
        i += 1
    return "".join(out)


def _password(options):
    """The deployment's password: pillar ``redis:password``, else the Sentinel file's ``requirepass``."""
    password = _pillar_settings().get("password")
    if password:
        return password
    path = options.get("config_file", "/etc/redis/sentinel.conf")
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as handle:
            for line in handle:
                words = line.split(None, 1)
                if len(words) == 2 and words[0].lower() == "requirepass":
                    return _unquote(words[1])
    except OSError as exc:
        log.warning("redis_sentinel beacon: no password in pillar and %s unreadable: %s", path, exc.strerror)
    return None


def _state(options):
    key = f"redis_sentinel_beacon.{options.get('_beacon_name', __virtualname__)}"
    return __context__.setdefault(key, {"pubsub": None, "leading": set(), "error": None})


def _subscribe(options):
    port = int(options.get("port") or _pillar_settings().get("sentinel_port") or 26379)
    client = redis.Redis(
        host=options.get("host", "127.0.0.1"),
        port=port,
        password=_password(options),
        socket_timeout=5,
        socket_connect_timeout=5,
        decode_responses=True,
        retry=Retry(NoBackoff(), 0),
    )
    # Subscription confirmations are skipped by type below: with ignore_subscribe_messages,
    # get_message() answers None for them, which would end a drain early.
    pubsub = client.pubsub()
    pubsub.psubscribe("*")
    return pubsub


def _close(state):
    pubsub, state["pubsub"] = state.get("pubsub"), None
    if pubsub is not None:
        try:
            pubsub.close()
        except Exception:  # pylint: disable=broad-except
            pass


def _instance(data):
    """``<type> <name> <ip> <port> [@ <master> <ip> <port>]`` as a dict."""
    words = data.split()
    found = {"raw": data}
    if len(words) >= 4:
        found.update(instance_type=words[0], instance=words[1], ip=words[2], port=_int(words[3]))
        found["master_name"] = words[1] if words[0] == "master" else None
    if "@" in words:
        rest = words[words.index("@") + 1 :]
        if len(rest) >= 3:
            found.update(master_name=rest[0], master_ip=rest[1], master_port=_int(rest[2]))
    return found


def _int(text):
    try:
        return int(text)
    except ValueError:
        return text


def _master_of(data):
    words = data.split()
    if words[:1] == ["master"] and len(words) > 1:
        return words[1]
    if "@" in words and len(words) > words.index("@") + 1:
        return words[words.index("@") + 1]
    return None


def _handle(channel, data, state, wanted, sentinel):
    """The (tag, data) to send for one Sentinel message, or None."""
    if channel == "+elected-leader":
        # Only the Sentinel that won the election publishes this: it leads the failover.
        master = _master_of(data)
        if master:
            state["leading"].add(master)
        return None
    if channel.startswith("-failover-abort"):
        master = _master_of(data)
        state["leading"].discard(master)
    if channel not in wanted:
        return None
    if channel == "+switch-master":
        words = data.split()
        if len(words) != 5:
            return None
        master = words[0]
        if master not in state["leading"]:
            return None  # another Sentinel led this failover: its minion sends the event
        state["leading"].discard(master)
        return "switch-master", {
            "master_name": master,
            "old_ip": words[1],
            "old_port": _int(words[2]),
            "new_ip": words[3],
            "new_port": _int(words[4]),
            "sentinel": sentinel,
        }
    payload = _instance(data)
    payload.update(event=channel, sentinel=sentinel)
    return (channel[1:] if channel.startswith("+") else channel), payload


def _drain(state, wanted, limit, sentinel):
    for _ in range(limit):
        message = state["pubsub"].get_message(timeout=0)
        if message is None:
            return
        if message.get("type") not in ("message", "pmessage"):
            continue
        outcome = _handle(message["channel"], message["data"], state, wanted, sentinel)
        if outcome:
            tag, data = outcome
            __salt__["event.send"](TAG_PREFIX + tag, data)


def beacon(config):
    """
    Drain the local Sentinel's events and send the wanted ones to the master's event bus
    (tags ``redis/sentinel/<event>``, see the module's documentation). Returns no beacon
    events of its own.

    .. code-block:: yaml

        beacons:
          redis_sentinel:
            - interval: 2
    """
    options = salt.utils.beacons.list_to_dict(config)
    state = _state(options)
    wanted = set(options.get("events", DEFAULT_EVENTS))
    limit = int(options.get("max_messages", MAX_MESSAGES))
    settings = _pillar_settings()
    sentinel = f"{options.get('host', '127.0.0.1')}:{options.get('port') or settings.get('sentinel_port', 26379)}"
    if settings.get("hostname"):
        sentinel = f"{settings['hostname']} ({sentinel})"
    for _attempt in range(2):
        fresh = state["pubsub"] is None
        try:
            if fresh:
                state["pubsub"] = _subscribe(options)
                if state["error"]:
                    log.info("redis_sentinel beacon: subscribed to the local Sentinel again")
                state["error"] = None
            _drain(state, wanted, limit, sentinel)
            break
        except redis.RedisError as exc:
            text = f"{type(exc).__name__}: {exc}"
            if text != state["error"]:
                log.warning("redis_sentinel beacon: the local Sentinel: %s (subscribing again)", text)
            state["error"] = text
            _close(state)
            if fresh:
                break  # the Sentinel does not answer: try again at the next interval
    return []


def close(config):
    """Drop the subscription (Salt calls this when it reloads or disables beacons)."""
    options = salt.utils.beacons.list_to_dict(config) if isinstance(config, list) else dict(config or {})
    _close(_state(options))
