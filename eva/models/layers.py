"""Small building blocks shared by the architectures."""

from torch import nn


def conv_bn_relu(
    cin: int,
    cout: int,
    *,
    stride: int = 1,
    dilation: int = 1,
    separable: bool = False,
    dropout: float = 0.0,
) -> nn.Sequential:
    """3x3 conv (padding keeps the size at stride 1) -> BatchNorm -> ReLU [-> Dropout].

    separable=True makes it depthwise-separable: a 3x3 depthwise conv (one filter per input
    channel) then a 1x1 pointwise conv, ~8x fewer weights than a full 3x3 conv.
    """
    pad = dilation  # "same" padding for a 3x3 kernel with this dilation
    if separable:
        conv = nn.Sequential(
            nn.Conv2d(cin, cin, 3, stride, pad, dilation, groups=cin, bias=False),
            nn.Conv2d(cin, cout, 1, bias=False),
        )
    else:
        conv = nn.Conv2d(cin, cout, 3, stride, pad, dilation, bias=False)
    layers = [conv, nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)
