"""shutdown_distributed(): the gloo group's threads are gone afterwards, and a caller that still holds the
group (through a DDP model) is warned, since those threads can abort the interpreter at exit."""
import gc
import logging

import torch
import torch.distributed as dist
from torch import nn

from vmamba_zoo.mm.dist import gloo_threads, shutdown_distributed


def test_shutdown_warns_while_a_ddp_model_still_holds_the_group(tmp_path, caplog):
    assert not dist.is_initialized()
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    model = nn.parallel.DistributedDataParallel(nn.Linear(3, 2))
    model(torch.randn(4, 3)).sum().backward()
    assert gloo_threads(), "gloo runs worker threads while the group lives"
    with caplog.at_level(logging.WARNING, logger="vmamba_zoo.mm.dist"):
        shutdown_distributed()
    assert not dist.is_initialized()
    assert "still running after destroy_process_group" in caplog.text  # the model keeps the group alive
    del model
    gc.collect()
    assert gloo_threads() == []  # the last reference gone: the group is destroyed and its threads joined
