"""Sessions 10/11: the "custom ResNet" (ResNet-9 of the DAWNBench record).

prep:   conv3x3 -> BN -> ReLU                                   64 ch
layer1: conv3x3 -> MaxPool2 -> BN -> ReLU, plus ResBlock        128 ch
layer2: conv3x3 -> MaxPool2 -> BN -> ReLU                       256 ch
layer3: conv3x3 -> MaxPool2 -> BN -> ReLU, plus ResBlock        512 ch
head:   global max-pool -> FC                                   ~6.57M parameters

The course pools with MaxPool(4) on the 4x4 map of a 32x32 input; a global max-pool is the
same there and also fits the 3x3 map of a 28x28 input.
"""

from torch import Tensor, nn

from eva.models.layers import conv_bn_relu


def conv_pool_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.MaxPool2d(2),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class ResBlock(nn.Module):
    """x + (conv-BN-ReLU-conv-BN-ReLU)(x)."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            conv_bn_relu(channels, channels), conv_bn_relu(channels, channels)
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class CustomResNet(nn.Module):
    def __init__(
        self, in_channels: int = 3, num_classes: int = 10, width: int = 64, dropout: float = 0.0
    ):
        super().__init__()
        w = width
        self.prep = conv_bn_relu(in_channels, w)
        self.layer1 = nn.Sequential(conv_pool_bn_relu(w, 2 * w), ResBlock(2 * w))
        self.layer2 = conv_pool_bn_relu(2 * w, 4 * w)
        self.layer3 = nn.Sequential(conv_pool_bn_relu(4 * w, 8 * w), ResBlock(8 * w))
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(8 * w, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.layer3(self.layer2(self.layer1(self.prep(x))))
        return self.fc(self.drop(self.pool(x).flatten(1)))  # raw logits
