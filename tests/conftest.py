import pytest
import torch


@pytest.fixture(autouse=True)
def _restore_torch_rng():
    """Library code must not depend on or alter global RNG state; keep tests independent anyway."""
    state = torch.random.get_rng_state()
    yield
    torch.random.set_rng_state(state)
