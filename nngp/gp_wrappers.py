"""gpytorch wrapper: the analytic NNGP kernel of an architecture spec as a gpytorch Kernel.

(Named ``gp_wrappers`` rather than ``gpytorch`` so it never shadows the library.)
"""

from __future__ import annotations


import gpytorch
import torch

from sampler.architectures import Architecture

from .kernels import _require, kernel, kernel_diag


class NNGPKernel(gpytorch.kernels.Kernel):
    """The NNGP kernel of ``arch`` (no trainable hyperparameters; wrap it in a ScaleKernel to
    learn an output scale).

    Parameters
    ----------
    arch : sampler.FCN or sampler.CNN
        A spec with an analytic kernel (see :func:`nngp.kernel`).
    input_shape : tuple of int, optional
        One example's shape; required for CNN.

    Inputs are ``(n, d)`` (or with leading batch dimensions); the kernel is computed in float64
    and returned in the inputs' dtype.
    """

    has_lengthscale = False

    def __init__(self, arch: Architecture, input_shape: tuple[int, ...] | None = None, **kwargs):
        impl = _require(arch)  # fail now, with the message that names empirical_kernel
        if input_shape is None:
            impl.shape(arch, None, 1)  # an architecture that needs input_shape says so now
        super().__init__(**kwargs)
        self.arch = arch
        self.input_shape = None if input_shape is None else tuple(input_shape)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, diag: bool = False, last_dim_is_batch: bool = False,
                **params) -> torch.Tensor:
        if last_dim_is_batch:
            raise ValueError("NNGPKernel does not support last_dim_is_batch=True")
        batch = torch.broadcast_shapes(x1.shape[:-2], x2.shape[:-2])
        a = x1.expand(*batch, *x1.shape[-2:]).reshape(-1, *x1.shape[-2:])
        b = x2.expand(*batch, *x2.shape[-2:]).reshape(-1, *x2.shape[-2:])
        out = []
        for xa, xb in zip(a, b):
            if diag:
                if xa.shape != xb.shape or not torch.equal(xa, xb):
                    # diag of a cross kernel: entry-by-entry (rare in gpytorch)
                    out.append(torch.stack([kernel(self.arch, xa[i:i + 1], xb[i:i + 1], input_shape=self.input_shape)[0, 0]
                                            for i in range(xa.shape[0])]))
                else:
                    out.append(kernel_diag(self.arch, xa, input_shape=self.input_shape))
            elif xa.data_ptr() == xb.data_ptr() and xa.shape == xb.shape and torch.equal(xa, xb):
                out.append(kernel(self.arch, xa, input_shape=self.input_shape))
            else:
                out.append(kernel(self.arch, xa, xb, input_shape=self.input_shape))
        res = torch.stack(out).to(x1.dtype)
        shape = (*batch, *res.shape[1:])
        return res.reshape(shape)

    def num_outputs_per_input(self, x1, x2) -> int:
        return 1


