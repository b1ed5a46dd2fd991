"""The distillation loss against hand computations, and against the reference script's broken form."""

import math

import pytest
import torch
import torch.nn.functional as F

from kd_edge.training.losses import distillation_loss, kd_kl_loss, kd_mse_loss


def softmax(values, temperature):
    exps = [math.exp(v / temperature) for v in values]
    return [e / sum(exps) for e in exps]


def hand_kd(student, teacher, temperature):
    """T^2 * sum_i p_t(i) * log(p_t(i) / p_s(i)), computed with plain floats."""
    p_s, p_t = softmax(student, temperature), softmax(teacher, temperature)
    return temperature**2 * sum(t * math.log(t / s) for s, t in zip(p_s, p_t, strict=True))


STUDENT = [[2.0, 1.0, 0.1], [0.5, -1.0, 3.0]]
TEACHER = [[3.0, 0.5, -0.5], [0.0, 0.0, 2.0]]


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0, 20.0])
def test_kd_kl_matches_hand_computation(temperature):
    expected = sum(hand_kd(s, t, temperature) for s, t in zip(STUDENT, TEACHER, strict=True)) / len(STUDENT)
    got = kd_kl_loss(torch.tensor(STUDENT), torch.tensor(TEACHER), temperature)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_total_loss_weights_ce_and_kd():
    student, teacher, labels = torch.tensor(STUDENT), torch.tensor(TEACHER), torch.tensor([0, 2])
    ce = sum(-math.log(softmax(s, 1.0)[y]) for s, y in zip(STUDENT, [0, 2], strict=True)) / 2
    kd = sum(hand_kd(s, t, 4.0) for s, t in zip(STUDENT, TEACHER, strict=True)) / 2
    terms = distillation_loss(student, teacher, labels, temperature=4.0, alpha=0.3, kd_loss="kl")
    assert terms["ce"].item() == pytest.approx(ce, rel=1e-5)
    assert terms["kd"].item() == pytest.approx(kd, rel=1e-5)
    assert terms["loss"].item() == pytest.approx(0.3 * ce + 0.7 * kd, rel=1e-5)


def test_alpha_one_is_plain_cross_entropy():
    student, labels = torch.tensor(STUDENT), torch.tensor([1, 0])
    terms = distillation_loss(student, torch.tensor(TEACHER), labels, temperature=4.0, alpha=1.0, kd_loss="kl")
    assert terms["loss"].item() == pytest.approx(F.cross_entropy(student, labels).item())


def test_zero_when_student_equals_teacher():
    logits = torch.randn(8, 10)
    assert kd_kl_loss(logits, logits.clone(), 4.0).item() == pytest.approx(0.0, abs=1e-6)
    assert kd_mse_loss(logits, logits.clone(), 4.0).item() == 0.0


def test_finite_for_extreme_logits():
    student = torch.tensor([[1e4, -1e4, 0.0], [-3e4, 3e4, 1e4]], requires_grad=True)
    teacher = torch.tensor([[-1e4, 1e4, 0.0], [3e4, -3e4, 0.0]])
    loss = kd_kl_loss(student, teacher, 1.0)
    loss.backward()
    assert math.isfinite(loss.item()) and loss.item() > 0
    assert torch.isfinite(student.grad).all()


def test_gradient_does_not_shrink_with_temperature():
    """Without T^2 the soft-label gradient falls as 1/T^2; with it, it tends to a constant."""
    torch.manual_seed(0)
    teacher = torch.randn(16, 10) * 3
    start = torch.randn(16, 10) * 3
    norms = {}
    for temperature in (2.0, 8.0, 32.0):
        student = start.clone().requires_grad_(True)
        kd_kl_loss(student, teacher, temperature).backward()
        norms[temperature] = student.grad.norm().item()
    assert norms[32.0] > 0.5 * norms[2.0]
    assert norms[32.0] == pytest.approx(norms[8.0], rel=0.1)


def test_mse_is_the_high_temperature_limit_of_kl():
    torch.manual_seed(1)
    # float64: at high T the KL is tiny and float32 rounding would dominate it.
    student, teacher = torch.randn(4, 10, dtype=torch.float64), torch.randn(4, 10, dtype=torch.float64)
    # Remove each row's mean difference: the softmax ignores it, the MSE does not.
    student = student - (student - teacher).mean(1, keepdim=True)
    assert kd_kl_loss(student, teacher, 200.0).item() == pytest.approx(
        0.5 * kd_mse_loss(student, teacher, 1.0).item(), rel=1e-2
    )


def reference_script_loss(student_logits, teacher_logits, labels, temperature, alpha):
    """The reference script's loss, verbatim in behaviour: log-probabilities passed as a probability target."""
    soft_targets = F.log_softmax(teacher_logits / temperature, dim=1)
    soft_predictions = F.log_softmax(student_logits / temperature, dim=1)
    kl = F.kl_div(soft_predictions, soft_targets, reduction="batchmean") * temperature**2
    return alpha * F.cross_entropy(student_logits, labels) + (1 - alpha) * kl


def test_reference_script_form_is_broken_and_ours_is_not():
    student, teacher, labels = torch.tensor(STUDENT), torch.tensor(TEACHER), torch.tensor([0, 2])
    broken = reference_script_loss(student, teacher, labels, 4.0, 0.5)
    ours = distillation_loss(student, teacher, labels, 4.0, 0.5, "kl")["loss"]
    assert math.isnan(broken.item())  # target log-probabilities are negative, so t * log(t) is NaN
    assert math.isfinite(ours.item())
