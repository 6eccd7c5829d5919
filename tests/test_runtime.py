"""Starting Ray: what a local instance sets before it starts."""

import os

from ray.train.v2._internal.constants import ENABLE_PREEMPTION_WATCHER_ENV_VAR

from aikd.runtime import PREEMPTION_WATCHER, local_instance_settings


def test_a_local_instance_turns_ray_trains_preemption_watcher_off_unless_the_user_set_it(monkeypatch):
    assert PREEMPTION_WATCHER == ENABLE_PREEMPTION_WATCHER_ENV_VAR  # the variable Ray Train reads
    monkeypatch.delenv(PREEMPTION_WATCHER, raising=False)
    local_instance_settings()
    assert os.environ[PREEMPTION_WATCHER] == "0"
    monkeypatch.setenv(PREEMPTION_WATCHER, "1")
    local_instance_settings()
    assert os.environ[PREEMPTION_WATCHER] == "1"
