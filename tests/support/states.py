"""What a ``state.apply`` result (saltfactories' ``salt_cli.run``) says.

``result.data`` is ``{minion: {state key: state return}}`` when the target is a glob or a
list, and one minion's ``{state key: state return}`` when it names that minion alone.
Functions taking ``states`` want one minion's part."""


def _data(result):
    return getattr(result, "data", result)


def states_with_changes(result):
    """``[(minion, state id)]`` of every state that reported changes, over every minion."""
    return [(minion, state["__id__"]) for minion, states in _data(result).items()
            for state in states.values() if state["changes"]]


def changed_ids(states):
    """The sorted ids of one minion's states that reported changes."""
    return sorted(state["__id__"] for state in states.values() if state["changes"])


def failed_states(states):
    """``"id: comment"`` of one minion's states that failed, sorted."""
    return sorted(f"{state['__id__']}: {state['comment']}" for state in states.values() if state["result"] is False)


def failed_comments(states):
    """``{id: comment}`` of one minion's states that failed."""
    return {state["__id__"]: state["comment"] for state in states.values() if state["result"] is False}


def state_by_id(result, minion, state_id):
    """The return of the state ``state_id`` on ``minion`` (None: ``result`` targeted that
    minion alone); fails naming the ids there are when it did not run."""
    data = _data(result)
    states = data if minion is None else data[minion]
    for state in states.values():
        if state["__id__"] == state_id:
            return state
    ran = sorted(state["__id__"] for state in states.values())
    raise AssertionError(f"no state {state_id!r} in {minion or 'the minion'}'s return: {ran}")
