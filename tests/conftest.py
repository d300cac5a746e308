import os
import random

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _own_config_dir(tmp_path_factory):
    """Checkpoint signing keys live in a config dir of the test session, never the user's."""
    os.environ["NASCLI_CONFIG_DIR"] = str(tmp_path_factory.mktemp("nascli-config"))


@pytest.fixture(autouse=True, scope="session")
def _own_cache_dir(tmp_path_factory):
    """Latency tables are cached in a cache dir of the test session, never the user's."""
    os.environ["NASCLI_CACHE_DIR"] = str(tmp_path_factory.mktemp("nascli-cache"))


@pytest.fixture(autouse=True)
def _seed():
    random.seed(0)
    torch.manual_seed(0)
