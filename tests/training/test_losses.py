"""The reconstruction loss's own autograd Function against autograd's formula."""

import torch

from interp.training.losses import reconstruction_loss


def reference(recon, target):
    return (recon - target).pow(2).sum(-1).mean()


def test_squared_error_value_and_gradients_match_autograd():
    g = torch.Generator().manual_seed(0)
    for shape in [(7, 5), (2, 3, 4), (6,)]:
        recon = torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=True)
        target = torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=True)
        got, want = reconstruction_loss(recon, target), reference(recon, target)
        torch.testing.assert_close(got, want)
        scale = torch.tensor(1.7, dtype=torch.float64)  # an upstream gradient other than 1
        for a, b in zip(torch.autograd.grad(got * scale, [recon, target]), torch.autograd.grad(want * scale, [recon, target])):
            torch.testing.assert_close(a, b)
    assert torch.autograd.gradcheck(reconstruction_loss, (recon, target))


def test_broadcasting_and_mixed_dtypes_fall_back_to_autograd():
    recon = torch.randn(4, 3, requires_grad=True)
    target = torch.randn(3)
    torch.testing.assert_close(reconstruction_loss(recon, target), reference(recon, target))
    target64 = torch.randn(4, 3, dtype=torch.float64)
    torch.testing.assert_close(reconstruction_loss(recon, target64), reference(recon, target64))
