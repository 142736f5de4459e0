import pytest
import torch


@pytest.fixture(autouse=True)
def _global_rng_not_reseeded():
    """No library function may reseed torch's global RNG (every random function takes an explicit
    seed or generator): a test fails if ``torch.initial_seed()`` changed while it ran, i.e. if
    something called ``torch.manual_seed``/``torch.seed``. The state is restored afterwards so that
    tests stay independent of each other's draws (building a torch module draws its default
    initialisation from the global RNG before ours replaces it)."""
    seed, state = torch.initial_seed(), torch.random.get_rng_state()
    yield
    reseeded = torch.initial_seed() != seed
    torch.random.set_rng_state(state)
    assert not reseeded, "torch's global RNG was reseeded during the test"
