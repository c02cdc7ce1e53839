"""A launcher's environment that cannot describe this process is one line, before any group is joined."""

from __future__ import annotations

import pytest

from llmfoundry.distributed import init_distributed
from llmfoundry.errors import UserError


@pytest.mark.parametrize(("env", "message"), [
    ({"RANK": "2", "WORLD_SIZE": "2"}, r"RANK=2, WORLD_SIZE=2, LOCAL_RANK=0 \(set by the launcher\): expected "
                                       r"WORLD_SIZE >= 1, 0 <= RANK < WORLD_SIZE"),
    ({"RANK": "0", "WORLD_SIZE": "0"}, r"RANK=0, WORLD_SIZE=0"),
    ({"RANK": "one", "WORLD_SIZE": "2"}, r"RANK='one' \(set by the launcher\): expected an integer"),
])
def test_launcher_environment_is_checked(monkeypatch, env, message):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(UserError, match=message):
        init_distributed(5.0)


def test_nproc_beyond_the_gpus_is_one_line_before_any_process_starts(monkeypatch):
    import torch

    from llmfoundry.distributed.launch import check_devices

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    check_devices(2)
    with pytest.raises(UserError, match=r"--nproc 8: this machine has 2 GPU\(s\); use at most that many"):
        check_devices(8)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    check_devices(8)  # CPU: N gloo processes
