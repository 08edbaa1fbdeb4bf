"""A small residual network as a list of layers: the worked example of `model.arch`.

    model:
      arch: transferability.resnet:layers

Any importable function with the signature of `layers` works the same way (`mypkg.nets:layers`
for one in your own package): the study calls it to build every network, counts its layers,
and the transfer cut n copies the first n modules of the list, parameters and buffers (batch
norm's running statistics too). This file imports nothing from the package on purpose: a
network of your own needs nothing from it either.
"""

from __future__ import annotations

from torch import nn


def layers(
    num_classes: int, width: float = 1.0, dropout: float = 0.0, image_size: int = 32
) -> list[nn.Module]:
    """The layers of a ResNet-8 for small images, as the transfer experiment counts them:

    0. stem: 3x3 conv (stride 2 from 64 px up) + BatchNorm + ReLU, 32 channels;
    1-3. residual stages of one basic block each (two 3x3 conv + BatchNorm, identity or 1x1
       projection shortcut, ReLU after the sum): 32, 64 and 128 channels, the last two halving
       the resolution;
    4. head: global average pooling, dropout, and a linear map onto the classes.

    Arguments (the study passes all four as keywords, from its settings):
      num_classes: outputs of the last layer (the task's classes);
      width: multiplies every channel count (`model.width`);
      dropout: before the classifier (`model.dropout`);
      image_size: the images' side in pixels (`data.image_size`; RGB, 3 channels).

    The number of layers must not depend on the arguments. `model.init` re-initialises every
    Conv2d and Linear afterwards (he: He-normal, the head N(0, 0.01); biases zero).
    """
    c1, c2, c3 = (max(1, round(c * width)) for c in (32, 64, 128))
    stem_stride = 2 if image_size >= 64 else 1
    return [
        nn.Sequential(
            nn.Conv2d(3, c1, 3, stride=stem_stride, padding=1, bias=False),
            nn.BatchNorm2d(c1),
            nn.ReLU(inplace=True),
        ),
        BasicBlock(c1, c1, stride=1),
        BasicBlock(c1, c2, stride=2),
        BasicBlock(c2, c3, stride=2),
        nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(c3, num_classes),
        ),
    ]


class BasicBlock(nn.Module):
    """relu(bn(conv(relu(bn(conv(x))))) + shortcut(x)), He et al. (2016)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))
