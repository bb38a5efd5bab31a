"""The host loop's reporters (reporting.py) on hand-made rows: the progress line, metrics.jsonl
and TensorBoard event files, the last read back with TensorBoard's own record format
(length, CRC, Event protobuf) rather than through the writer that wrote them."""

import json
import struct
import sys

import pytest

from mimic_mjx import reporting
from mimic_mjx.errors import MimicError

ROW = {"training/iteration": 3, "training/env_steps": 49152, "charts/SPS": 4321.0, "training/reward_mean": 0.5,
       "training/reward_fraction_of_max": 0.25, "training/episode_length": 41.5, "losses/kl": 0.0123,
       "trpo/accepted": 1.0, "trpo/backtracks": 2.0, "charts/iteration_s": 3.5}


def test_progress_lines_of_a_run_and_of_a_sweep():
    lines = []
    reporting.printer(lines.append, 10)(3, [ROW])
    reporting.printer(lines.append, 10, sweep=True)(3, [ROW, {**ROW, "training/reward_fraction_of_max": 0.75}])
    assert lines == [
        "iter     3/10  steps     49,152     4,321 steps/s  reward 0.5000 (25.0% of max)  ep len   41.5  "
        "kl 1.23e-02  line search ok/2 backtracks",
        "iter    3/10 steps/member    49,152   3.50 s/iter  reward fraction best 0.750 worst 0.250"]


def test_jsonl_writer_appends_one_object_per_row(tmp_path):
    path = tmp_path / "metrics.jsonl"
    write = reporting.jsonl_writer(path)
    write(1, [{"a": 1.0}])
    write(2, [{"a": 2.0, "member": 0}, {"a": 3.0, "member": 1}])
    assert [json.loads(line) for line in path.read_text().splitlines()] == [
        {"a": 1.0}, {"a": 2.0, "member": 0}, {"a": 3.0, "member": 1}]


def _scalars(folder):
    """{tag: [(step, value)]} from the TFRecord event files in `folder`: each record is
    uint64 length, uint32 CRC, the Event protobuf, uint32 CRC (TensorFlow's record format)."""
    from tensorboardX.proto import event_pb2

    out = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
            pos += 12 + length + 4
            for value in event.summary.value:
                out.setdefault(value.tag, []).append((event.step, value.simple_value))
    return out


def test_tensorboard_scalars_at_env_steps_one_folder_per_member(tmp_path):
    pytest.importorskip("tensorboardX")
    write = reporting.tensorboard_writer(tmp_path / "run")
    write(1, [{"training/iteration": 1, "training/env_steps": 100, "losses/kl": 0.5, "note": "text"}])
    write(2, [{"training/iteration": 2, "training/env_steps": 200, "losses/kl": 0.25}])
    write.close()  # the host loop's last call: the writer thread writes what it holds
    got = _scalars(tmp_path / "run")
    assert got == {"training/iteration": [(100, 1.0), (200, 2.0)], "losses/kl": [(100, 0.5), (200, 0.25)]}

    sweep = reporting.tensorboard_writer(tmp_path / "sweep", members=2)
    sweep(1, [{"member": 0, "training/env_steps": 64, "x": 1.5}, {"member": 1, "training/env_steps": 64, "x": -2.0}])
    sweep.close()
    assert _scalars(tmp_path / "sweep" / "member_0") == {"x": [(64, 1.5)]}
    assert _scalars(tmp_path / "sweep" / "member_1") == {"x": [(64, -2.0)]}


def test_tensorboard_without_its_extra_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # `import tensorboardX` now fails
    with pytest.raises(MimicError, match=r"^--tensorboard needs tensorboardX: pip install 'mimic_mjx\[tensorboard\]'$"):
        reporting.check_tensorboard()
