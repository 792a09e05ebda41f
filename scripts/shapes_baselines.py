#!/usr/bin/env python3
"""How learnable `convnet make-dataset shapes` is: a linear model of the pixels against a small
convolutional network, both in PyTorch on the same split.

    convnet make-dataset shapes --count 3000 --out shapes
    python3 scripts/shapes_baselines.py shapes

Needs torch and numpy. The split (2500 training, 500 held out) and the initialisations come from
torch.manual_seed(0).
"""

import sys

import numpy as np
import torch
import torch.nn as nn


def train(model, x, y, epochs, lr, batch=50):
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(epochs):
        for i in range(0, len(y), batch):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x[i:i + batch]), y[i:i + batch]).backward()
            optimizer.step()


def accuracy(model, x, y):
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def main():
    directory = sys.argv[1] if len(sys.argv) > 1 else "shapes"
    torch.manual_seed(0)
    x = torch.from_numpy(np.load(f"{directory}/images.npy"))
    y = torch.from_numpy(np.load(f"{directory}/labels.npy"))
    order = torch.randperm(len(y))
    x, y = x[order], y[order]
    held = len(y) // 6
    xt, yt, xv, yv = x[held:], y[held:], x[:held], y[:held]
    classes = int(y.max()) + 1
    linear = nn.Sequential(nn.Flatten(), nn.Linear(x[0].numel(), classes))
    train(linear, xt, yt, epochs=30, lr=1e-3)
    cnn = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(64, classes))
    train(cnn, xt, yt, epochs=10, lr=3e-3)
    for name, model in [("linear model of the pixels, 30 epochs", linear),
                        ("3-convolution network, 10 epochs", cnn)]:
        print(f"{name}: held out {accuracy(model, xv, yv):.1%}, "
              f"training {accuracy(model, xt, yt):.1%}")


if __name__ == "__main__":
    main()
