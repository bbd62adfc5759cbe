"""Progress display: plain lines at most every N seconds when stderr is not a terminal."""

import io

import pytest

from sinks_jax import progress as progress_lib
from sinks_jax.progress import PlainProgress, progress


class FakeClock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_plain_progress_prints_a_line_per_interval_and_at_close():
    out, clock = io.StringIO(), FakeClock()
    bar = PlainProgress(desc="train", total=100, unit="step", every=30, stream=out, clock=clock)
    for _ in range(10):  # 10 updates within 5 s: no line yet.
        clock.t += 0.5
        bar.update(1)
    assert out.getvalue() == ""
    clock.t += 25.0  # 30 s after the start.
    bar.set_postfix({"loss": "2.500"}, refresh=False)
    bar.update(1)
    lines = out.getvalue().splitlines()
    assert lines == ["train: 11/100 step [0m30s, 0.367 step/s] loss=2.500"]  # 11 steps / 30 s.
    for _ in range(5):  # 5 more updates, 1 s apart: still inside the next interval.
        clock.t += 1.0
        bar.update(1)
    assert len(out.getvalue().splitlines()) == 1
    bar.close()
    bar.close()  # closing twice prints once.
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and lines[1].startswith("train: 16/100 step [0m35s,")
    assert "\r" not in out.getvalue()


def test_plain_progress_iterates_resumes_and_stays_quiet_when_asked():
    out, clock = io.StringIO(), FakeClock()
    seen = list(PlainProgress(range(3), desc="sinks", unit="layout", stream=out, clock=clock))
    assert seen == [0, 1, 2] and out.getvalue() == "sinks: 3 layout [0m00s, 0 layout/s]\n"
    out = io.StringIO()
    bar = PlainProgress(total=20, initial=10, unit=" docs", every=0, stream=out, clock=clock)
    clock.t += 4.0
    bar.update(2)  # the rate counts only the steps of this process: 2 in 4 s.
    assert out.getvalue() == "12/20 docs [0m04s, 0.5 docs/s]\n"
    for kwargs in ({"disable": True}, {"leave": False}):
        out = io.StringIO()
        with PlainProgress(every=1e9, stream=out, clock=clock, **kwargs) as bar:
            bar.update(5)
        assert out.getvalue() == ""


def test_progress_picks_a_bar_only_for_terminals(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    from tqdm.auto import tqdm

    bar = progress(total=3, desc="x", stream=Terminal(), dynamic_ncols=True)
    assert isinstance(bar, tqdm)
    bar.close()
    monkeypatch.setenv(progress_lib.EVERY_ENV, "5")
    bar = progress(total=3, desc="x", stream=io.StringIO(), dynamic_ncols=True)
    assert isinstance(bar, PlainProgress) and bar.every == 5.0


def test_every_seconds_reads_the_environment(monkeypatch):
    monkeypatch.delenv(progress_lib.EVERY_ENV, raising=False)
    assert progress_lib.every_seconds() == 30.0
    assert progress_lib.every_seconds(2) == 2.0
    monkeypatch.setenv(progress_lib.EVERY_ENV, "0.5")
    assert progress_lib.every_seconds() == 0.5
    for bad in ("soon", "-1"):
        monkeypatch.setenv(progress_lib.EVERY_ENV, bad)
        with pytest.raises(ValueError, match="SINKS_JAX_PROGRESS_EVERY"):
            progress_lib.every_seconds()


def test_stage_prints_one_line_with_its_time():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    clock = FakeClock()
    out = io.StringIO()
    with progress_lib.stage("jacobian (last layer)", stream=out, clock=clock):
        assert out.getvalue() == ""  # elsewhere than a terminal: one line, at the end
        clock.t += 12.34
    assert out.getvalue() == "jacobian (last layer): 12.3 s\n"
    term = Terminal()
    with progress_lib.stage("model", stream=term, clock=clock):
        assert term.getvalue() == "model ..."  # a terminal sees the stage start
        clock.t += 2.0
    assert term.getvalue() == "model ...\rmodel: 2.0 s\033[K\n"
    out = io.StringIO()
    with pytest.raises(KeyError), progress_lib.stage("figures", stream=out, clock=clock):
        raise KeyError("x")
    assert out.getvalue() == ""  # a failed stage leaves the word to its error
