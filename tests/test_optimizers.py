"""kd-edge's optimisers and schedules take the steps torch.optim's do (they exist to spare every training
process torch._dynamo's import, which torch.optim makes)."""

import subprocess
import sys

import pytest
import torch
from torch import nn

from kd_edge.errors import CheckpointError
from kd_edge.settings import OptimSettings
from kd_edge.training.checkpoint import TrainingStateFile
from kd_edge.training.optimizers import make_optimizer, make_scheduler

STEPS = 25


def small_network() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3), nn.Linear(3, 3)
    )


def batches():
    generator = torch.Generator().manual_seed(1)
    return [(torch.randn(8, 1, 8, 8, generator=generator), torch.randint(0, 3, (8,), generator=generator))
            for _ in range(STEPS)]  # fmt: skip


def train(model, optimizer, scheduler, data) -> None:
    for images, labels in data:
        loss = nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()


def torch_optim(model, settings: OptimSettings):
    params = model.parameters()
    if settings.optimizer == "sgd":
        decay = settings.weight_decay
        optimizer = torch.optim.SGD(params, settings.lr, momentum=0.9, nesterov=True, weight_decay=decay)
    elif settings.optimizer == "adam":
        optimizer = torch.optim.Adam(params, settings.lr, weight_decay=settings.weight_decay, fused=True)
    else:
        optimizer = torch.optim.AdamW(params, settings.lr, weight_decay=settings.weight_decay, fused=True)
    if settings.schedule == "onecycle":
        return optimizer, torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=settings.lr, total_steps=STEPS)
    if settings.schedule == "cosine":
        return optimizer, torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=STEPS)
    return optimizer, None


@pytest.mark.parametrize("rule", ["adamw", "adam", "sgd"])
@pytest.mark.parametrize("schedule", ["onecycle", "cosine", "constant"])
def test_each_rule_and_schedule_takes_torch_optims_steps(rule, schedule):
    settings = OptimSettings(optimizer=rule, schedule=schedule, lr=0.05, weight_decay=0.01)
    ours, reference, data = small_network(), small_network(), batches()
    optimizer = make_optimizer(ours, settings)
    train(ours, optimizer, make_scheduler(optimizer, settings, STEPS), data)
    train(reference, *torch_optim(reference, settings), data)
    moved = 0.0
    states = ours.state_dict().items(), reference.state_dict().values(), small_network().state_dict().values()
    for (name, mine), theirs, start in zip(*states, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-6, msg=f"{rule}, {schedule}: {name}")
        moved += (mine.float() - start.float()).abs().sum().item()
    assert moved > 1.0  # the steps did train


def test_a_state_saved_mid_schedule_continues_as_if_never_stopped():
    settings = OptimSettings(optimizer="adamw", schedule="onecycle", lr=0.05, weight_decay=0.01)
    data = batches()
    straight = small_network()
    optimizer = make_optimizer(straight, settings)
    train(straight, optimizer, make_scheduler(optimizer, settings, STEPS), data)

    stopped = small_network()
    optimizer = make_optimizer(stopped, settings)
    scheduler = make_scheduler(optimizer, settings, STEPS)
    train(stopped, optimizer, scheduler, data[:10])
    saved = optimizer.state_dict(), scheduler.state_dict(), stopped.state_dict()

    resumed = small_network()
    resumed.load_state_dict(saved[2])
    optimizer = make_optimizer(resumed, settings)
    scheduler = make_scheduler(optimizer, settings, STEPS)
    optimizer.load_state_dict(saved[0])
    scheduler.load_state_dict(saved[1])
    train(resumed, optimizer, scheduler, data[10:])
    for mine, expected in zip(resumed.state_dict().values(), straight.state_dict().values(), strict=True):
        assert torch.equal(mine, expected)


def test_a_saved_state_of_another_rule_is_refused():
    model = small_network()
    saved = make_optimizer(model, OptimSettings(optimizer="sgd")).state_dict()
    with pytest.raises(ValueError, match="does not fit"):
        make_optimizer(model, OptimSettings(optimizer="adamw")).load_state_dict(saved)


def test_a_training_state_saved_with_torch_optim_is_refused_with_what_to_do(tmp_path):
    model = small_network()
    state_file = TrainingStateFile(tmp_path, "student")
    # as an earlier kd-edge wrote it: torch.optim's state, no format number
    torch.save({"optimizers": [torch.optim.AdamW(model.parameters()).state_dict()]}, state_file.path)
    with pytest.raises(CheckpointError, match="--force instead of --resume"):
        TrainingStateFile(tmp_path, "student").load()


@pytest.mark.slow
def test_a_distill_run_does_not_import_torch_dynamo(tmp_path):
    """2 s and about 150 MB of every training process (benchmarks/results/training-memory.md)."""
    script = (
        "import sys\n"
        "from kd_edge.cli import main\n"
        f"sys.argv = ['kd-edge', 'distill', '--epochs', '1', '--out', r'{tmp_path / 'run'}']\n"
        "try:\n    main()\nexcept SystemExit as end:\n    assert not end.code, end.code\n"
        "print('dynamo imported' if 'torch._dynamo' in sys.modules else 'no dynamo')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "no dynamo"


def test_a_loaded_state_goes_to_its_parameters_device():
    """A training state is read onto the CPU; the moments and step counts of parameters elsewhere (a GPU) must
    follow them there, where the update reads them ("meta" stands in for a GPU here)."""
    settings = OptimSettings(optimizer="adamw", schedule="constant", lr=0.05)
    model = small_network()
    optimizer = make_optimizer(model, settings)
    train(model, optimizer, None, batches()[:2])
    elsewhere = make_optimizer(small_network().to("meta"), settings)
    elsewhere.load_state_dict(optimizer.state_dict())
    tensors = [value for state in elsewhere.state for value in state.values() if torch.is_tensor(value)]
    assert len(tensors) == 3 * len(elsewhere.params) and all(value.device.type == "meta" for value in tensors)
