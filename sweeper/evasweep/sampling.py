"""How a sweep process seeds and builds its sampler."""

from evasweep.space import grid


def derived_seed(seed: int | None, n_existing: int, worker: int, host: str = "") -> int | None:
    """The sampler seed of this command: reproducible, yet never replaying earlier draws.

    A resumed study (n_existing > 0) and each worker (evasweep.workers) get a stream of
    their own; so do workers on other machines (host), which may see the same n_existing.
    """
    if seed is None:
        return None
    import zlib

    import numpy as np

    entropy = [seed, n_existing, worker, zlib.crc32(host.encode())]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def build_sampler(sampler_cfg, space, seed: int | None):
    from hydra.utils import instantiate

    kwargs = {"seed": seed}
    if str(sampler_cfg._target_).endswith("GridSampler"):
        kwargs["search_space"] = grid(space)
    return instantiate(sampler_cfg, **kwargs)
