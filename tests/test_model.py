"""Model shapes, the CIFAR stem, cosine heads and normalised embeddings."""

import pytest
import torch

from sclib.core.model import BACKBONES, CosineHead, SelfClassifier, build_backbone


def test_forward_gives_one_logit_matrix_per_head():
    model = SelfClassifier("small", 1, 16, [10, 20, 40], mlp_hidden=32, mlp_out=16).eval()
    logits = model(torch.randn(5, 1, 16, 16))
    assert [tuple(t.shape) for t in logits] == [(5, 10), (5, 20), (5, 40)]


def test_views_are_heads_by_views_and_match_single_forward_in_eval_mode():
    model = SelfClassifier("small", 3, 16, [4, 6], mlp_hidden=32, mlp_out=8).eval()
    views = [torch.randn(3, 3, 16, 16), torch.randn(3, 3, 16, 16), torch.randn(3, 3, 8, 8)]
    out = model(views)
    assert len(out) == 2 and all(len(h) == 3 for h in out)
    for v, view in enumerate(views):
        for h, logits in enumerate(model(view)):
            assert torch.allclose(out[h][v], logits, atol=1e-5)


def test_embeddings_are_unit_length_and_logits_are_cosines():
    model = SelfClassifier("small", 1, 16, [10], mlp_hidden=32, mlp_out=16).eval()
    z = model.embed(torch.randn(4, 1, 16, 16))
    assert torch.allclose(z.norm(dim=1), torch.ones(4), atol=1e-5)
    assert model.classify(z)[0].abs().max() <= 1 + 1e-5


def test_cosine_head_ignores_weight_scale():
    head = CosineHead(8, 5)
    x = torch.nn.functional.normalize(torch.randn(3, 8), dim=1)
    before = head(x)
    with torch.no_grad():
        head.weight.mul_(7.0)
    assert torch.allclose(head(x), before, atol=1e-6)
    assert not any(name.endswith("bias") for name, _ in head.named_parameters())


def test_learned_gain_scales_cosines_per_class_and_is_trained():
    # the official weight_norm head: weight_g filled with 1, then trained; "fixed" keeps the
    # cosine head's parameters (and so every committed checkpoint's keys) as they were
    x = torch.nn.functional.normalize(torch.randn(3, 8), dim=1)
    torch.manual_seed(0)
    fixed = CosineHead(8, 5)
    torch.manual_seed(0)
    learned = CosineHead(8, 5, learned_gain=True)
    assert [n for n, _ in fixed.named_parameters()] == ["weight"]
    assert torch.equal(learned(x), fixed(x))  # the gain starts at 1
    with torch.no_grad():
        learned.gain.copy_(torch.arange(1.0, 6.0))
    assert torch.allclose(learned(x), fixed(x) * torch.arange(1.0, 6.0), atol=1e-6)
    learned(x).sum().backward()
    assert learned.gain.grad is not None and learned.gain.grad.shape == (5,)
    model = SelfClassifier("small", 1, 16, [4, 6], mlp_hidden=32, mlp_out=8, cls_gain="learned")
    assert [tuple(h.gain.shape) for h in model.heads] == [(4,), (6,)]
    with pytest.raises(ValueError, match="cls_gain 'free' is unknown; choose one of fixed, learned"):
        SelfClassifier("small", 1, 16, [4], mlp_hidden=32, mlp_out=8, cls_gain="free")


def test_resnet_stem_depends_on_image_size():
    small_stem, width = build_backbone("resnet18", 3, 32)
    assert width == 512
    assert small_stem.conv1.kernel_size == (3, 3) and small_stem.conv1.stride == (1, 1)
    assert isinstance(small_stem.maxpool, torch.nn.Identity)
    big_stem, _ = build_backbone("resnet18", 1, 96)
    assert big_stem.conv1.kernel_size == (7, 7) and big_stem.conv1.in_channels == 1
    assert isinstance(big_stem.maxpool, torch.nn.MaxPool2d)


def test_cifar_stem_keeps_resolution_until_layer2():
    net, _ = build_backbone("resnet18", 3, 32)
    x = net.layer1(net.maxpool(net.relu(net.bn1(net.conv1(torch.randn(1, 3, 32, 32))))))
    assert x.shape[-1] == 32


# Every backbone of the registry at a small width (ResNet-18 at its own) on a 16 px and a 32 px input.
@pytest.mark.parametrize("name", sorted(BACKBONES))
@pytest.mark.parametrize("size", [16, 32])
def test_every_backbone_gives_its_feature_width_and_trains_a_step(name, size):
    torch.manual_seed(0)
    net, width = build_backbone(name, 3, size, small_width=8)
    x = torch.randn(4, 3, size, size)
    out = net(x)
    assert out.shape == (4, width)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    before = [p.detach().clone() for p in net.parameters()]
    loss = out.pow(2).mean()
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    optimizer.step()
    changed = sum(not torch.equal(b, p) for b, p in zip(before, net.parameters()))
    assert changed == len(before)  # every weight receives a gradient: no dead branch


@pytest.mark.parametrize("name", sorted(set(BACKBONES) - {"resnet18"}))
def test_width_scales_every_small_backbone(name):
    _, narrow = build_backbone(name, 3, 32, small_width=8)
    _, wide = build_backbone(name, 3, 32, small_width=16)
    assert wide == 2 * narrow
    with pytest.raises(ValueError, match="width must be a positive integer"):
        build_backbone(name, 3, 32, small_width=0)
