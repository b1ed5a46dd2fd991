"""Distillation losses as pure functions of logits.

Hinton, Vinyals and Dean, "Distilling the Knowledge in a Neural Network" (2015):

    L = alpha * CE(y, s) + (1 - alpha) * T^2 * KL(softmax(t / T) || softmax(s / T))

where s and t are the student's and teacher's logits and T the temperature. The
soft-label gradient scales as 1 / T^2, so the T^2 factor keeps the two terms'
gradients comparable whatever T is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kd_kl_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * KL(softmax(t/T) || softmax(s/T))``, averaged over the batch.

    Both distributions are passed to ``F.kl_div`` as log-probabilities with
    ``log_target=True``. (The reference script passed log-probabilities as a
    probability target, which makes the loss NaN; see ``tests/test_losses.py``.)
    """
    log_p_student = F.log_softmax(student_logits / temperature, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits / temperature, dim=1)
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    return kl * temperature**2


def kd_mse_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean squared error between raw logits, ``mean((s - t)^2)``; the temperature is unused.

    For large T, ``T^2 * KL`` tends to half this value (for zero-mean logits), so
    logit matching is the high-temperature limit of the KL loss (Kim et al., 2021,
    "Comparing Kullback-Leibler Divergence and Mean Squared Error Loss in KD").
    """
    del temperature
    return F.mse_loss(student_logits, teacher_logits)


KD_LOSSES = {"kl": kd_kl_loss, "mse": kd_mse_loss}


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
    alpha: float,
    kd_loss: str,
) -> dict[str, torch.Tensor]:
    """``alpha * CE(y, s) + (1 - alpha) * KD(t, s)``, returned with its two terms.

    Returns:
        ``{"loss": total, "ce": hard-label term, "kd": soft-label term}`` (terms unweighted).
    """
    ce = F.cross_entropy(student_logits, labels)
    if alpha >= 1.0:  # student alone: skip the teacher term entirely
        return {"loss": ce, "ce": ce, "kd": torch.zeros_like(ce)}
    kd = KD_LOSSES[kd_loss](student_logits, teacher_logits, temperature)
    return {"loss": alpha * ce + (1.0 - alpha) * kd, "ce": ce, "kd": kd}


def ensemble_logits(teacher_logits: torch.Tensor, weights: torch.Tensor, temperature: float) -> torch.Tensor:
    """Several teachers as one: logits whose softened distribution is the weighted mean of theirs.

    Args:
        teacher_logits: (teachers, batch, classes).
        weights: (teachers,) or (teachers, batch), each column summing to 1.

    Returns ``T * log(sum_i w_i * softmax(t_i / T))``: passed to ``kd_kl_loss`` at the same T,
    its softened distribution is exactly the mixture, so one KL term covers every teacher.
    """
    if weights.dim() == 1:
        weights = weights[:, None]
    log_mixture = torch.logsumexp(F.log_softmax(teacher_logits / temperature, dim=2) + weights[..., None].log(), dim=0)
    return temperature * log_mixture


def confidence_weights(teacher_logits: torch.Tensor) -> torch.Tensor:
    """Per-sample teacher weights (teachers, batch): each teacher's top-class probability, normalised over
    the teachers. A teacher unsure of an image counts less for it; no label is used, so the
    ensemble can be scored on any split."""
    confidence = F.softmax(teacher_logits, dim=2).amax(dim=2)
    return confidence / confidence.sum(dim=0, keepdim=True)
