"""States as data: every state of a server connection and of a client connection has its entry
in its deadline table, each table names a real setting, and a client session refuses a change
its TRANSITIONS table does not list. (The deadlines themselves are tested over real sockets
with the timeouts they name, in test_server.py and test_clienting.py.)"""

import dataclasses
import socket

import pytest

from hio_http import client_session, stewarding
from hio_http.clienting import Client
from hio_http.settings import Settings


def test_every_server_connection_state_names_a_setting_or_none():
    fields = {field.name for field in dataclasses.fields(Settings)}
    assert set(stewarding.DEADLINES) == set(stewarding.State)
    for state, setting in stewarding.DEADLINES.items():
        assert setting is None or setting in fields, (state, setting)


def test_every_client_session_state_has_its_deadline_and_its_successors():
    states = set(client_session.SessionState)
    assert set(client_session.DEADLINES) == states
    assert set(client_session.TRANSITIONS) == states
    client = Client("http://127.0.0.1:1")
    for state, setting in client_session.DEADLINES.items():
        assert setting is None or isinstance(getattr(client, setting), (int, float)), state
    # Nothing follows CLOSED, and every other state can end in it.
    assert client_session.TRANSITIONS[client_session.SessionState.CLOSED] == frozenset()
    for state, successors in client_session.TRANSITIONS.items():
        if state is not client_session.SessionState.CLOSED:
            assert client_session.SessionState.CLOSED in successors, state


def test_a_client_session_refuses_a_change_its_table_does_not_list():
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = Client(f"http://127.0.0.1:{listener.getsockname()[1]}", timeout=5)
        client.get("/")  # opens a session, CONNECTING
        client.service()
        session = client._session
        assert session is not None
        current = session.state
        forbidden = next(state for state in client_session.SessionState
                         if state is not current
                         and state not in client_session.TRANSITIONS[current])
        with pytest.raises(AssertionError,
                           match=f"does not go from {current.value} to {forbidden.value}"):
            session._enter(forbidden)
        assert session.state is current
        client.close()
