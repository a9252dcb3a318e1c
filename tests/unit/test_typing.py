"""The typing state machine: timeouts, positions and the bounded change log."""

from __future__ import annotations

from homeserver.services.ephemeral.typing import TypingState

T0 = 1_000_000


def test_start_renew_and_stop_move_the_position_only_on_visible_changes() -> None:
    state = TypingState(T0)
    assert state.update("!r", "@a:x", T0 + 30_000, T0)
    first = state.position
    assert state.typing_in("!r", T0) == ["@a:x"]
    # Renewing the timeout changes nothing a client sees.
    assert not state.update("!r", "@a:x", T0 + 60_000, T0 + 10)
    assert state.position == first
    assert state.update("!r", "@a:x", None, T0 + 20)
    assert state.position > first
    assert state.typing_in("!r", T0 + 20) == []
    # Stopping twice is no change.
    assert not state.update("!r", "@a:x", None, T0 + 30)


def test_expiry_drops_typers_and_bumps_the_position() -> None:
    state = TypingState(T0)
    state.update("!r", "@a:x", T0 + 100, T0)
    state.update("!r", "@b:x", T0 + 500, T0)
    state.update("!s", "@a:x", T0 + 100, T0)
    before = state.position
    assert state.next_expiry() == T0 + 100
    assert state.expire(T0 + 99) == set()
    assert state.expire(T0 + 100) == {"!r", "!s"}
    assert state.position > before
    assert state.typing_in("!r", T0 + 100) == ["@b:x"]
    assert state.rooms_changed_since(before) == {"!r", "!s"}
    assert state.next_expiry() == T0 + 500
    # Reading hides a typer whose timeout passed before the sweep ran.
    assert state.typing_in("!r", T0 + 600) == []


def test_positions_follow_the_clock_and_never_go_back() -> None:
    state = TypingState(T0)
    state.update("!r", "@a:x", T0 + 10_000, T0 + 5)
    assert state.position == T0 + 5
    # A clock that steps back still yields a larger position.
    state.update("!r", "@b:x", T0 + 10_000, T0 + 1)
    assert state.position == T0 + 6


def test_rooms_changed_since() -> None:
    state = TypingState(T0)
    start = state.position
    state.update("!r", "@a:x", T0 + 10_000, T0 + 1)
    middle = state.position
    state.update("!s", "@a:x", T0 + 10_000, T0 + 2)
    assert state.rooms_changed_since(start) == {"!r", "!s"}
    assert state.rooms_changed_since(middle) == {"!s"}
    assert state.rooms_changed_since(state.position) == set()


def test_a_position_older_than_the_log_gets_every_room_with_typers() -> None:
    state = TypingState(T0, log_size=2)
    old = state.position - 1  # from before this process started
    state.update("!r", "@a:x", T0 + 10_000, T0 + 1)
    assert state.rooms_changed_since(old) == {"!r"}
    early = state.position
    state.update("!s", "@a:x", T0 + 10_000, T0 + 2)
    state.update("!t", "@a:x", T0 + 10_000, T0 + 3)
    state.update("!t", "@a:x", None, T0 + 4)
    # "!r"'s change fell out of the log: all rooms with typers are reported.
    assert state.rooms_changed_since(early - 1) == {"!r", "!s"}
    assert state.rooms_changed_since(state.position - 1) == {"!t"}
