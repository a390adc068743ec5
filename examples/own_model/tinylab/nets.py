"""TinyNet: `depth` blocks of conv3x3-BN-ReLU-maxpool, global max pooling, one linear layer.

eva passes `in_channels` and `num_classes` (from the dataset's YAML); `width`, `depth` and
`dropout` are the YAML's keys (conf/model/tinynet.yaml) and can be set or swept on the
command line: `model.width=32`, `'model.width=choice(8,16)'`.
"""

from torch import Tensor, nn


class TinyNet(nn.Module):
    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        width: int = 16,
        depth: int = 2,
        dropout: float = 0.0,
    ):
        super().__init__()
        if width < 1 or depth < 1:
            raise ValueError(f"width={width}, depth={depth}: both must be 1 or more")
        blocks, channels = [], in_channels
        for i in range(depth):
            out = width * 2**i  # width, 2 x width, 4 x width, ...
            blocks.append(
                nn.Sequential(
                    nn.Conv2d(channels, out, 3, padding=1, bias=False),
                    nn.BatchNorm2d(out),
                    nn.ReLU(inplace=True),
                    nn.MaxPool2d(2),
                )
            )
            channels = out
        self.features = nn.Sequential(*blocks)  # GradCAM's default: the last Conv2d
        self.head = nn.Sequential(
            nn.AdaptiveMaxPool2d(1),
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(channels, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))  # raw logits (batch, num_classes)
