"""
Plain helpers and constants the integration tests share (fixtures stay in conftest.py):

- ``support.lab``: the session lab's names, addresses and password, its deployment file,
  Redis clients, commands and files inside lab hosts, minions answering, password checks;
- ``support.waits``: ``wait_until``, the one bounded poll every wait uses;
- ``support.cluster``: Redis Cluster clients and health, the writer thread, AOF writes;
- ``support.states``: what a ``state.apply`` result says (changed, failed, one state);
- ``support.events``: events on a salt-master's bus, from saltfactories' event listener.

tests/conftest.py puts tests/ on sys.path: import them as ``from support.lab import ...``.
"""
