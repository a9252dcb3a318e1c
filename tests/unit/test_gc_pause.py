"""The cycle collector is off while any sync builds its answer, and on again after."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from homeserver.services.core import gc_pause
from homeserver.services.core.gc_pause import gc_paused, gc_resumed


@pytest.fixture(autouse=True)
def collector_on() -> Iterator[None]:
    gc.enable()
    yield
    gc.enable()


def test_pauses_nest_and_the_last_one_out_resumes() -> None:
    with gc_paused():
        assert not gc.isenabled()
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()


def test_a_sleeping_holder_lets_go_only_when_alone() -> None:
    with gc_paused():
        with gc_resumed():
            assert gc.isenabled()
        assert not gc.isenabled()
        with gc_paused(), gc_resumed():
            assert not gc.isenabled()  # the other holder still builds its answer
    assert gc.isenabled()


def test_resumes_after_an_error() -> None:
    with pytest.raises(RuntimeError), gc_paused():
        raise RuntimeError("boom")
    assert gc.isenabled()


def test_leaves_a_collector_switched_off_by_others_off() -> None:
    gc.disable()
    with gc_paused():
        pass
    assert not gc.isenabled()


def test_overlapping_pauses_still_collect(monkeypatch: pytest.MonkeyPatch) -> None:
    class Cycle:
        def __init__(self) -> None:
            self.me = self

    monkeypatch.setattr(gc_pause, "MAX_PAUSE_S", 0.0)
    with gc_paused():
        with gc_paused():
            Cycle()
            before = gc.get_count()[0]
        # The inner holder left after MAX_PAUSE_S of pause: it collected.
        assert gc.get_count()[0] < before
        assert not gc.isenabled()
    assert gc.isenabled()
