"""checkpoints/training/progress.py: the model card's numbers come from the files themselves."""

import importlib.util
import json
from pathlib import Path

from landscape import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("progress", REPO / "checkpoints" / "training" / "progress.py")
assert _spec is not None and _spec.loader is not None
progress = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(progress)


def test_cycle_lengths_follow_the_chain_of_warm_restarts():
    assert progress.cycle_lengths({"epochs": 18}) == [18]
    assert progress.cycle_lengths({"epochs": 118, "init": {"epochs": 18, "init": {}}}) == [18, 100]
    chained = {"epochs": 168, "init": {"epochs": 118, "init": {"epochs": 18}}}
    assert progress.cycle_lengths(chained) == [18, 100, 50]


def test_work_left_is_the_epochs_to_go_at_the_median_pace_of_the_last_hardware():
    minutes = [(3, "bf16", "GPU"), (10, "fp32", "CPU"), (12, "fp32", "CPU"), (30, "fp32", "CPU")]
    log, seconds = [], 0
    for epoch, (spent, precision, hardware) in enumerate(minutes, 1):
        seconds += 60 * spent
        log.append({"epoch": epoch, "seconds": seconds, "precision": precision, "hardware": hardware})
    state = {"spec": json.dumps({"epochs": 200})}
    assert progress.work_left("run", log, state) == (
        "196 epochs of run, ~39 hours at the median 12.0 min per epoch of its last hardware"
    )
    assert progress.work_left("run", log[:1], {"spec": json.dumps({"epochs": 5})}) == (
        "4 epochs of run, ~12 minutes at the median 3.0 min per epoch of its last hardware"
    )
    assert progress.work_left("run", log, {"spec": json.dumps({"epochs": 4})}) is None


def test_the_table_carries_each_checkpoints_own_numbers_and_target():
    rows = progress.table().splitlines()[2:]
    assert len(rows) == len(progress.TARGETS)
    for row, (arch, target) in zip(rows, progress.TARGETS.items()):
        meta = load_checkpoint(REPO / "checkpoints" / f"{arch}.pt").metadata
        assert row.startswith(f"| `{arch}.pt` |")
        assert f"**{meta['test_acc']:.2f}%**" in row and f"{meta['train_acc']:.2f}%" in row
        assert (f">= {target}%: met" in row) == (meta["test_acc"] >= target)


def test_a_finished_run_keeps_no_state_and_its_planned_epochs_come_from_its_checkpoint():
    for arch in progress.runs():
        folder = REPO / "checkpoints" / "training" / arch
        if (folder / "checkpoint.pt").is_file():
            assert not (folder / "state.pt").exists(), f"{arch} finished: its state.pt is not kept"
            recipe = load_checkpoint(folder / "checkpoint.pt").metadata["recipe"]
            assert progress.planned_epochs(progress.read_state(arch)) == recipe["epochs"]
            assert progress.read_log(arch)[-1]["epoch"] == recipe["epochs"]
