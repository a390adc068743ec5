"""What a sweep process keeps alive and how it seeds: heartbeats and sampler streams."""

import logging
import threading

from evasweep.space import grid

log = logging.getLogger(__name__)


class Heartbeat:
    """Records a heartbeat for every trial this process has in flight, every interval."""

    def __init__(self, storage, interval: float):
        self.storage = storage
        self.interval = interval
        self.trial_ids: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="optuna-heartbeat", daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)

    def add(self, trial_id: int) -> None:
        self.trial_ids.add(trial_id)
        self.storage.record_heartbeat(trial_id)

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            for trial_id in list(self.trial_ids):
                try:
                    self.storage.record_heartbeat(trial_id)
                except Exception as e:  # a busy database: try again next beat
                    log.warning("heartbeat of trial %d failed: %s", trial_id, e)


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
