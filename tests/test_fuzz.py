"""Property-based fuzzing of the C3D reader and the stride segmenter (hypothesis, bounded).

Reader: a shipped trial with random bytes overwritten (header, parameters or data) and maybe
cut short gives a well-formed Trial or a one-line GaitDataError naming the file, nothing else:
no other exception, no crash (each read runs in a forked child, so an ezc3d segfault fails
the example instead of killing pytest). Segmenter: random marked events and NaN runs give
strides that all have T = 100, finite angles and plausible durations, or a GaitDataError.
"""

import dataclasses
import os
import select
import signal
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from tfds_gait import c3d, strides
from tfds_gait.errors import GaitDataError

EMB = os.path.join(os.path.dirname(c3d.__file__), "data", "embedded")
STRAIGHT = os.path.join(EMB, "biomechzoo", "HC036A", "Straight_HC036A10.c3d")
RAW = open(STRAIGHT, "rb").read()
DATA_START = (int.from_bytes(RAW[16:18], "little") - 1) * 512  # header word 9
FUZZ = settings(max_examples=30, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


def _check_trial(t: c3d.Trial) -> str:
    """'' if t is well formed, else what is wrong."""
    f = t.num_frames
    if not (t.angles.dtype == np.float32 and t.angles.shape == (f, 10, 3) and
            f >= c3d.MIN_FRAMES and np.isfinite(t.rate) and t.rate > 0):
        return f"malformed trial: angles {t.angles.dtype} {t.angles.shape}, rate {t.rate}"
    ev = [e for s in t.events.values() for e in s.values()]
    if any(e.size and (e.min() < 0 or e.max() >= f) for e in ev):
        return "event outside the data"
    return ""


def _read_in_child(path: str) -> str:
    """read_trial(path) in a forked child: 'ok', 'error: <msg>', or what went wrong."""
    r, w = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # JAX (if imported by other tests) warns about fork
        pid = os.fork()
    if pid == 0:  # child: report and leave without running any cleanup
        try:
            res = _check_trial(c3d.read_trial(path)) or "ok"
        except GaitDataError as e:
            res = f"error: {e}"
        except BaseException as e:  # noqa: BLE001  (exactly what must not happen)
            res = f"other: {type(e).__name__}: {e}"
        os.write(w, res.encode()[:60000])
        os._exit(0)
    os.close(w)
    ready, _, _ = select.select([r], [], [], 60)
    out = os.read(r, 65536).decode() if ready else ""
    os.close(r)
    if not ready:
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return f"child killed by signal {os.WTERMSIG(status)}"
    return out if ready else "child hung for 60 s"


positions = st.one_of(st.integers(0, 511), st.integers(512, DATA_START - 1),
                      st.integers(DATA_START, len(RAW) - 1))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@FUZZ
@given(edits=st.lists(st.tuples(positions, st.integers(0, 255)), min_size=1, max_size=12),
       cut=st.one_of(st.none(), st.integers(0, len(RAW))))
# Files that crashed ezc3d before tfds_gait.c3d walked the parameter records itself: SIGSEGV
# (a record's group id, a char parameter's dimensions, POINT:SCALE's dimensions) and a hang.
@example(edits=[(1116, 245)], cut=None)
@example(edits=[(540, 193)], cut=None)
@example(edits=[(1132, 0)], cut=None)
@example(edits=[(984, 4)], cut=None)
@example(edits=[(127, 107), (107, 76), (225, 149), (95, 35), (492, 243), (55650, 153),
                (1274, 153), (512, 72), (5316, 138), (156, 148)], cut=1215)
def test_reader_gives_a_trial_or_a_one_line_error(tmp_path_factory, edits, cut):
    raw = bytearray(RAW)
    for pos, value in edits:
        raw[pos] = value
    path = str(tmp_path_factory.mktemp("fuzz") / "trial.c3d")
    with open(path, "wb") as f:
        f.write(bytes(raw[:cut]))
    res = _read_in_child(path)
    assert res == "ok" or res.startswith(f"error: {path}: "), res
    assert "\n" not in res


TRIAL = c3d.read_trial(STRAIGHT)
F = TRIAL.num_frames
frames = st.integers(0, F - 1)
nan_runs = st.lists(st.tuples(st.integers(0, 9), frames, st.integers(1, 60)), max_size=6)


@FUZZ
@given(events=st.fixed_dictionaries({s: st.lists(frames, max_size=8) for s in "LR"}),
       offs=st.fixed_dictionaries({s: st.lists(frames, max_size=8) for s in "LR"}),
       runs=nan_runs, drop_markers=st.sampled_from([(), ("LHEEL",), ("LASIS", "SACRUM")]))
def test_segmenter_gives_good_strides_or_an_error(events, offs, runs, drop_markers):
    angles = TRIAL.angles.copy()
    for j, start, length in runs:
        angles[start:start + length, j] = np.nan
    ev = {s: {"strike": np.asarray(events[s], np.float64),
              "off": np.asarray(offs[s], np.float64)} for s in "LR"}
    markers = {k: v for k, v in TRIAL.markers.items() if k not in drop_markers}
    trial = dataclasses.replace(TRIAL, angles=angles, events=ev, markers=markers)
    try:
        got = strides.segment_strides(trial)
    except GaitDataError as e:
        assert str(e).startswith(f"{STRAIGHT}: ") and "\n" not in str(e)
        return
    for s in got:
        assert s["angles"].shape == (100, 10, 3) and s["valid"].shape == (100, 10)
        assert np.isfinite(s["angles"]).all() and s["valid"].mean() >= 0.5
        assert strides.MIN_STRIDE_S <= s["duration_s"] <= strides.MAX_STRIDE_S
        assert s["side"] in ("L", "R") and s["events"] in ("marked", "detected")
