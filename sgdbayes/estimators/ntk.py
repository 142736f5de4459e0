"""``ntk``: P_NTK(f|S), the distribution of functions of infinitely wide networks trained by gradient
descent on the squared loss from random initialisations (:func:`nngp.mse.gd_mse_ensemble`, Lee et al.
2019), scored for the functions the case's samplers found.

The outputs on S and E are Gaussian, from the case's NNGP kernel ``K`` and the NTK ``Theta``
(:func:`nngp.ntk_for`: analytic for FCNs with relu/erf, else the empirical NTK of ``n_init``
networks of the spec's width). ``time``:

``inf``
    trained to convergence: the outputs on S equal the targets, P(fits S) = 1, and P(f) is the
    orthant probability of the test block.
``train``
    the time of the case's ``sgd`` estimator (the label in ``sgd``): full-batch gradient descent on the
    mean squared error with learning rate ``lr`` for ``steps`` steps is flow time
    ``tau = 2 lr steps / m`` (:func:`nngp.mse.flow_time`). ``lr`` and ``steps`` come from that
    estimator (``lr``; ``steps = max_epochs``, which must equal its ``check_every`` so that every run
    trains exactly that long) unless set here. Training may not fit S by then: P(f|S) is conditioned
    on fitting S through the joint Gaussian on S and E (as the ``sgd`` estimator counts only runs
    that fit), and log P(fits S) is reported.

``parameterization``: ``standard`` (default) is the NTK of the networks ``sampler`` builds and the
``sgd`` estimator trains (``W ~ N(0, sigma_w^2 / fan_in)`` trained directly), at the spec's width:
that is what makes the SGD ``lr`` the NTK's learning rate. ``ntk`` uses the width-independent NTK
parameterisation (then ``lr`` means a learning rate in that parameterisation, not the SGD one's).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

import nngp
from nngp.mse import flow_time, gd_mse_ensemble, targets

from .base import register_estimator
from .gaussian import GaussianOptions, GaussianScorer


class NTKOptions(GaussianOptions):
    """:class:`GaussianOptions` and the NTK's time, parameterisation and (non-analytic) Monte Carlo size."""

    time: Literal["inf", "train"] = Field("inf", description="inf: trained to convergence; train: the flow time "
                                                              "2 lr steps / m of the sgd estimator's training")
    sgd: str = Field("sgd", description="label of the sgd estimator whose lr and steps set time = 'train'")
    lr: float = Field(0.0, ge=0.0, description="learning rate for time = 'train' (0: the sgd estimator's)")
    steps: int = Field(0, ge=0, description="full-batch steps for time = 'train' (0: the sgd estimator's max_epochs)")
    parameterization: Literal["standard", "ntk"] = Field(
        "standard", description="standard: the sgd estimator's networks at their width (lr maps 1:1); ntk: "
                                "width-independent")
    n_init: int = Field(64, ge=2, description="networks of the empirical NTK where there is no closed form")
    condition: bool = Field(True, description="at finite time, condition on fitting S (through the joint on S and E)")


def _training(case, options) -> tuple[float, int, int]:
    """``(lr, steps, m)`` of ``time = "train"``, from the options or the sgd estimator (checked)."""
    m = case.data.n_train
    if options.lr > 0 and options.steps > 0:
        return options.lr, options.steps, m
    try:
        spec = case.estimator(options.sgd)
    except KeyError:
        raise ValueError(f"ntk time = 'train' reads lr and steps from the estimator labelled sgd = {options.sgd!r}, "
                         f"which this config does not have; set sgd = '<label>' or both lr and steps") from None
    o = spec.options
    if getattr(o, "loss", None) != "mse" or getattr(o, "optimizer", None) != "sgd" or getattr(o, "momentum", 1) != 0:
        raise ValueError(f"ntk time = 'train' maps plain gradient descent on the squared loss: estimator "
                         f"{options.sgd!r} must have loss = 'mse', optimizer = 'sgd', momentum = 0")
    if o.batch_size != m:
        raise ValueError(f"ntk time = 'train' maps full-batch gradient descent: estimator {options.sgd!r} must have "
                         f"batch_size = data.n_train = {m}, got {o.batch_size}")
    if (o.check_every or 0) != o.max_epochs or o.epochs_after_fit != 0:
        raise ValueError(f"ntk time = 'train' needs every run of {options.sgd!r} to train exactly max_epochs steps: "
                         f"set check_every = max_epochs = {o.max_epochs} and epochs_after_fit = 0 there (got "
                         f"check_every = {o.check_every}, epochs_after_fit = {o.epochs_after_fit})")
    return options.lr or o.lr, options.steps or o.max_epochs, m


@register_estimator("ntk")
class NTKEstimator(GaussianScorer):
    """P_NTK(f|S): infinitely wide nets trained by gradient descent on MSE (Lee et al. 2019), an orthant per f."""

    Options = NTKOptions
    target = "ntk"
    summary_rows = (("ntk_log_p_fit", "log P(fits S) (NTK)"), ("ntk_flow_time", "NTK flow time 2 lr steps / m"))

    def conditions(self, options):
        return options.condition

    def _extra_key(self, case, options):
        return {"train": list(_training(case, options))} if options.time == "train" else {}

    def plan(self, case, options, functions=None):
        if options.time == "train":
            _training(case, options)  # a config that cannot map its time fails before any shard
        return super().plan(case, options, functions)

    def gaussian(self, case, options):
        split = case.split()
        x = split.x_all()
        K = case.fit("kernel").K
        theta, se = nngp.ntk_for(case.arch, x, parameterization=options.parameterization,
                                 input_shape=split.input_shape, n_init=options.n_init, seed=options.seed)
        if options.time == "inf":
            tau, facts = float("inf"), {"flow_time": None}
        else:
            lr, steps, m = _training(case, options)
            tau = flow_time(lr, steps, m)
            facts = {"flow_time": tau, "lr": lr, "steps": steps}
        g = gd_mse_ensemble(K, theta, targets(split.y_train), n_train=split.n_train, time=tau)
        facts["ntk_method"] = "analytic" if se is None else f"empirical ({options.n_init} networks)"
        if se is not None:
            facts["ntk_max_rel_stderr"] = float(se.max() / theta.diagonal().abs().max())
        return g, facts
