"""Shared fixtures: the real Kafka broker and Redis server, for the tests that use them."""
import os
import shutil
import warnings

import pytest

from streams.tools import services

CI = os.environ.get("CI") == "true"
# One data key for the whole run, inherited by every process a test starts (streams/sealed.py).
TEST_DATA_KEY = "test:" + "dGVzdCBrZXkgb2YgdGhlIGFucGkgdGVzdCBzdWl0ZSE="
os.environ.setdefault("ANPI_DATA_KEYS", TEST_DATA_KEY)


@pytest.fixture(scope="session")
def running_services():
    """Kafka and Redis answering on ANPI_KAFKA / ANPI_REDIS: started (and later stopped) if they were not.

    Without Java a developer's run skips these tests loudly; CI (CI=true) never skips them: it fails.
    """
    if shutil.which("java") is None and not CI:
        warnings.warn("SKIPPING the Kafka runtime tests: no java on this machine (CI never skips them)")
        pytest.skip("SKIPPED LOUDLY: the Kafka runtime needs java for the broker; CI never skips this")
    before = services.status()
    started = not all(before.values())
    if started:
        assert services.up() == 0, "anpi services up failed (see its output above)"
    yield services.local()
    if started:
        services.down()
