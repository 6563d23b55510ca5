"""The dcn family: a deformable ResNet-50 forward, kernelzoo's op against the
same model running torchvision's op.

``dcn-resnet50`` (DCNv2: the 3x3 convolutions of layer2 to layer4 modulated
deformable, 13 layers), random weights, batch 2 at 224x224, inference. Its
offset convolutions are given small random weights (offsets of about half a
pixel, masks around 0.5) so that the samples fall between pixels, as in a
trained model. The peer is a deep copy of the model whose deformable layers
call ``torchvision.ops.deform_conv2d`` instead; everything else (the regular
convolutions, batch norms, the head) is the same code. Compared: the logits.
"""

from __future__ import annotations

import copy
import types

import torch

from ..registry import Bench, case, skip


def _tv_deform(self, input, offset, mask):
    import torchvision.ops

    return torchvision.ops.deform_conv2d(input, offset, self.weight, self.bias,
                                         stride=self.stride, padding=self.padding,
                                         dilation=self.dilation, mask=mask)


@case("dcn", dtypes=("float32",))
def dcn_resnet50_forward(device, dtype, quick):
    try:
        import torchvision.ops  # noqa: F401
    except ImportError:
        skip("torchvision is not installed (pip install torchvision)")
    from kernelzoo.nn import DeformConv2d
    from kernelzoo.registry import PluginError, UnknownModelError, create_model

    name = "dcn-test" if quick else "dcn-resnet50"
    try:
        model = create_model(name)
    except (PluginError, UnknownModelError) as e:
        skip(f"the dcn family is not available: {e}")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if hasattr(m, "conv_offset"):
                w = m.conv_offset.weight
                w.copy_(torch.randn(w.shape, generator=g) * (0.5 / (w[0].numel() ** 0.5)))
                m.conv_offset.bias.copy_(torch.randn(m.conv_offset.bias.shape, generator=g) * 0.3)
    model = model.eval().to(device, dtype)
    peer = copy.deepcopy(model)
    layers = 0
    for m in peer.modules():
        if isinstance(m, DeformConv2d):
            m._deform = types.MethodType(_tv_deform, m)
            layers += 1
    size = model.config.image_size if quick else 224
    x = torch.randn(2, model.in_channels, size, size, generator=g).to(device, dtype)

    def run(net):
        def f():
            with torch.inference_mode():
                return net(x)
        return f

    return Bench(shape=f"{name} ({layers} deformable layers), batch 2, {size}x{size}",
                 ours=run(model), peer=run(peer), peer_name="same model, torchvision's op",
                 compare="close", rtol=1e-3, atol=1e-3, warmup=1, repeats=3)
