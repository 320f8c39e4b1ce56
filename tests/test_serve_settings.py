"""The service's worker layout: by default one single-threaded model worker per core (benchmarks/serve_load.py)."""

import pytest

from catsdogs.errors import CatsdogsError
from catsdogs.service import settings as settings_module
from catsdogs.service.settings import ServiceSettings


@pytest.mark.parametrize("cores", [1, 2, 8])
def test_default_is_one_single_threaded_worker_per_core(monkeypatch, cores):
    monkeypatch.setattr(settings_module, "usable_cores", lambda: cores)
    settings = ServiceSettings()
    assert settings.inference_workers == 0
    assert settings.worker_count == cores
    assert settings.session_threads == 1


def test_one_worker_shares_every_core(monkeypatch):
    monkeypatch.setattr(settings_module, "usable_cores", lambda: 4)
    settings = ServiceSettings(inference_workers=1)
    assert (settings.worker_count, settings.session_threads) == (1, 4)
    assert ServiceSettings(inference_workers=1, intra_op_threads=3).session_threads == 3


def test_negative_workers_are_refused_with_the_received_values():
    with pytest.raises(CatsdogsError, match=r"inference_workers=-1"):
        ServiceSettings(inference_workers=-1)
