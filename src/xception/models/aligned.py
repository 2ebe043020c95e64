"""DeepLab's "aligned" Xception (Chen et al., ECCV 2018) as configs of the same builder.

Named as timm names them (``xception41``, ``xception65``, ``xception71``) and laid out so timm's
weights for them import unchanged. What DeepLab changed relative to the paper's Figure 5:

- every entry-flow block has three separable convs, and xception71 has five entry blocks;
- a block downsamples with a stride-2 last separable conv instead of a 3x3/2 max-pool, so
  ``output_stride`` 16 or 8 can turn the later strides into dilation for dense prediction;
- BatchNorm between the depthwise and the pointwise conv of every separable conv, plus a ReLU there
  in the final (non-residual) block, whose separable convs are 1536, 1536 and 2048 wide;
- symmetric padding (as DeepLab's ``fixed_padding`` and timm), also in the stem.

Example: ``create_model("xception65", output_stride=16, num_classes=0)`` for a segmentation backbone.
"""

from __future__ import annotations

from dataclasses import replace

from .xception import XceptionConfig

XCEPTION41 = XceptionConfig(
    entry_convs=3,
    exit_channels=(728, 1024, 1024),
    final_channels=(1536, 1536, 2048),
    downsample="strided_conv",
    mid_norm=True,
    final_mid_relu=True,
    padding="symmetric",
    stem_padding="symmetric",
    bn_momentum=0.1,  # timm's setting (PyTorch convention)
)

# 16 middle-flow blocks instead of 8
XCEPTION65 = replace(XCEPTION41, middle_repeats=16)

# the entry flow doubles: a stride-1 block after each of the first two downsampling ones
XCEPTION71 = replace(XCEPTION65, entry_channels=(128, 256, 256, 728, 728),
                     entry_strides=(2, 1, 2, 1, 2))

ALIGNED = {"xception41": XCEPTION41, "xception65": XCEPTION65, "xception71": XCEPTION71}
