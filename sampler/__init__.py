"""sgd-bayes sampler: data splits, architectures, P_SGD and P_B by sampling, run folders, CLI."""

from ._span import span_basis
from .architectures import ARCHITECTURES, CNN, FCN, LSTM, Architecture, Module, make_architecture, register_architecture
from .ensemble import Network, member_grads, member_hvp
from .data import Pool, Split, load_pool, load_split
from .functions import FunctionCounts
from .network_check import check_network
from .prior import sample_prior
from .seeding import derive_seed, make_generator
from .sgd import TrainSpec, sample_sgd, train_runs
from .store import RunFolder

__all__ = [
    "Architecture", "FCN", "CNN", "LSTM", "Module", "make_architecture", "register_architecture", "ARCHITECTURES",
    "Network", "member_grads", "member_hvp", "check_network",
    "Pool", "Split", "load_pool", "load_split",
    "FunctionCounts", "RunFolder", "derive_seed", "make_generator",
    "TrainSpec", "sample_sgd", "train_runs",
    "sample_prior", "span_basis",
]
