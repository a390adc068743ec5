"""Session 6: "C1 C2 C3 C4 O" without max-pooling.

Each of C1-C3 ends in a 3x3 stride-2 conv that halves the resolution (32 -> 16 -> 8 -> 4 on
CIFAR, 28 -> 14 -> 7 -> 4 on Fashion-MNIST). C2 and C4 use depthwise-separable convs, C3
opens with a dilation-2 conv (a 5x5 view for 3x3 weights). The output block O is global
average pooling then one linear layer to the classes.

Receptive field (eva.models.receptive_field): 83 pixels, against the > 44 asked for.
Parameters with channels [24, 48, 64, 96]: ~125k, against the < 200k budget.
"""

from torch import Tensor, nn

from eva.models.layers import conv_bn_relu


class Session6Net(nn.Module):
    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 10,
        channels: tuple[int, int, int, int] = (24, 48, 64, 96),
        dropout: float = 0.05,
    ):
        super().__init__()
        if len(channels) != 4:
            raise ValueError(f"channels={list(channels)}: expected 4 values (blocks C1..C4)")
        c1, c2, c3, c4 = channels
        d = dropout
        self.c1 = nn.Sequential(
            conv_bn_relu(in_channels, c1, dropout=d),
            conv_bn_relu(c1, c1, dropout=d),
            conv_bn_relu(c1, c1, stride=2, dropout=d),
        )
        self.c2 = nn.Sequential(
            conv_bn_relu(c1, c2, separable=True, dropout=d),
            conv_bn_relu(c2, c2, separable=True, dropout=d),
            conv_bn_relu(c2, c2, stride=2, dropout=d),
        )
        self.c3 = nn.Sequential(
            conv_bn_relu(c2, c3, dilation=2, dropout=d),
            conv_bn_relu(c3, c3, separable=True, dropout=d),
            conv_bn_relu(c3, c3, stride=2, dropout=d),
        )
        self.c4 = nn.Sequential(
            conv_bn_relu(c3, c4, separable=True, dropout=d),
            conv_bn_relu(c4, c4, separable=True),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c4, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.c4(self.c3(self.c2(self.c1(x))))
        return self.fc(self.pool(x).flatten(1))  # raw logits
