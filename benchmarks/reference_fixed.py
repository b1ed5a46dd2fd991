"""The reference workflow (../shared/seed/distillation-workflow.txt), re-implemented for measurement.

Same recipe as the published script: torchvision dataset with ToTensor + Normalize(0.5, 0.5),
DataLoader batch 128 with shuffling, the two seed CNNs, Adam lr 0.01, 5 epochs each,
T = 4, alpha = 0.5, teacher run on every student batch. One change, the fix the
design notes ask for: the KL term gets ``log_target=True``, so the loss is not NaN.
``--broken`` restores the published loss, to show what it does.

Prints one JSON line with each stage's wall time and the test accuracies.

    python benchmarks/reference_fixed.py --root benchmarks/work/data --dataset FashionMNIST
"""

import argparse
import json
import time

import torch
import torch.nn.functional as F
import torchvision
import torchvision.transforms as T
from torch import nn


class SeedCNN(nn.Module):
    def __init__(self, width1, width2, hidden):
        super().__init__()
        self.conv1 = nn.Conv2d(1, width1, 3, padding=1)
        self.conv2 = nn.Conv2d(width1, width2, 3, padding=1)
        self.fc1 = nn.Linear(width2 * 7 * 7, hidden)
        self.fc2 = nn.Linear(hidden, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


def kd_loss(student_logits, teacher_logits, labels, temperature, alpha, broken):
    log_p_teacher = F.log_softmax(teacher_logits / temperature, dim=1)
    log_p_student = F.log_softmax(student_logits / temperature, dim=1)
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=not broken) * temperature**2
    return alpha * F.cross_entropy(student_logits, labels) + (1 - alpha) * kl


def train(model, loader, epochs, lr, loss_fn):
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for epoch in range(epochs):
        model.train()
        for images, labels in loader:
            optimizer.zero_grad()
            loss = loss_fn(model, images, labels)
            loss.backward()
            optimizer.step()
        print(f"epoch {epoch + 1}/{epochs} loss {loss.item():.4f}", flush=True)


@torch.no_grad()
def test_accuracy(model, loader):
    model.eval()
    correct = sum((model(images).argmax(1) == labels).sum().item() for images, labels in loader)
    return correct / len(loader.dataset)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="torchvision root holding <Dataset>/raw/*-ubyte")
    parser.add_argument("--dataset", default="FashionMNIST", choices=["FashionMNIST", "MNIST"])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--broken", action="store_true", help="use the published (NaN) loss")
    args = parser.parse_args()

    started = time.perf_counter()
    transform = T.Compose([T.ToTensor(), T.Normalize((0.5,), (0.5,))])
    dataset_class = getattr(torchvision.datasets, args.dataset)
    train_set = dataset_class(args.root, train=True, download=False, transform=transform)
    test_set = dataset_class(args.root, train=False, download=False, transform=transform)
    train_loader = torch.utils.data.DataLoader(train_set, batch_size=128, shuffle=True)
    test_loader = torch.utils.data.DataLoader(test_set, batch_size=128, shuffle=False)

    t0 = time.perf_counter()
    teacher = SeedCNN(32, 64, 128)
    train(teacher, train_loader, args.epochs, 0.01, lambda m, x, y: F.cross_entropy(m(x), y))
    teacher_seconds = time.perf_counter() - t0

    t0 = time.perf_counter()
    student = SeedCNN(16, 32, 64)
    teacher.eval()

    def student_loss(model, images, labels):
        with torch.no_grad():
            teacher_logits = teacher(images)
        return kd_loss(model(images), teacher_logits, labels, 4.0, 0.5, args.broken)

    train(student, train_loader, args.epochs, 0.01, student_loss)
    student_seconds = time.perf_counter() - t0

    t0 = time.perf_counter()
    result = {
        "teacher_test_accuracy": test_accuracy(teacher, test_loader),
        "student_test_accuracy": test_accuracy(student, test_loader),
        "teacher_seconds": round(teacher_seconds, 2),
        "student_seconds": round(student_seconds, 2),
    }
    result["eval_seconds"] = round(time.perf_counter() - t0, 2)
    result["script_seconds"] = round(time.perf_counter() - started, 2)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
