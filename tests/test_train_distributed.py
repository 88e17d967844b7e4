"""Two gloo processes train like one process on the same global batch, and stay in sync.

Without SyncBN (CPU has none) each rank's batch norm sees its own half of the batch, so the
one-process reference forwards the two halves separately and computes the loss on the
concatenated logits: that is exactly the computation DDP with the gathered loss performs.
"""

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from sclib.core import distributed
from sclib.core.loss import SelfClassifierLoss
from sclib.core.optim import set_lr
from sclib.run.config import make_config
from sclib.train import Trainer, epoch_seed

STEPS = 3
pytestmark = pytest.mark.filterwarnings("ignore:Grad strides do not match")


def config(out):
    """In fp32 (``amp=False``): the reference below runs the model outside autocast."""
    return make_config("digits", "fast", out=out, image_size=8, mlp_hidden=32, mlp_out=16, batch_size=64,
                       heads=[10, 20], epochs=1, device="cpu", warmup_epochs=0, lr=0.05, amp=False)


def fixed_views(trainer):
    """Deterministic per-sample views, so both runs see the same inputs."""
    from sclib.core.augment import eval_transform

    cfg = trainer.augment.cfg

    def views(images, generator=None):
        x = eval_transform(images, cfg)
        return [x, x.flip(-1) * 0.9]

    return views


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, port, out, result_path):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2",
                      RANK=str(rank), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    trainer = Trainer.from_config(config(out), progress=False)
    trainer.augment = fixed_views(trainer)
    order = torch.randperm(len(trainer.images), generator=torch.Generator().manual_seed(epoch_seed(0, 0)))
    local = 32
    for step in range(STEPS):
        idx = order[step * 64 + rank * local: step * 64 + (rank + 1) * local]
        set_lr(trainer.optimizer, 0.05)
        trainer.train_step(trainer.images[idx], None)
    params = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}
    torch.save(params, f"{result_path}.{rank}")
    distributed.cleanup()
    os._exit(0)  # skip gloo's C++ teardown, which has aborted under load (see tests/test_distributed.py)


def reference(out):
    torch.set_num_threads(1)
    trainer = Trainer.from_config(config(out), progress=False)
    views_of = fixed_views(trainer)
    loss_fn = SelfClassifierLoss()
    order = torch.randperm(len(trainer.images), generator=torch.Generator().manual_seed(epoch_seed(0, 0)))
    model = trainer.model
    model.train()
    for step in range(STEPS):
        idx = order[step * 64:(step + 1) * 64]
        halves = [model(views_of(trainer.images[part])) for part in idx.chunk(2)]
        outputs = [[torch.cat([h[head][v] for h in halves]) for v in range(2)] for head in range(2)]
        loss = loss_fn(outputs)
        trainer.optimizer.zero_grad()
        loss.backward()
        set_lr(trainer.optimizer, 0.05)
        trainer.optimizer.step()
    return dict(model.named_parameters())


@pytest.mark.slow
def test_two_gloo_processes_match_one_process_on_the_global_batch(tmp_path):
    result = tmp_path / "params"
    mp.spawn(_worker, args=(_free_port(), str(tmp_path / "ddp"), str(result)), nprocs=2, join=True)
    rank0 = torch.load(f"{result}.0", weights_only=True)
    rank1 = torch.load(f"{result}.1", weights_only=True)
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), f"ranks drifted apart in {name}"
    expected = reference(str(tmp_path / "single"))
    initial = Trainer.from_config(config(str(tmp_path / "init")), progress=False).model.state_dict()
    moved = 0
    for name, value in expected.items():
        assert torch.allclose(rank0[name], value.detach(), atol=2e-5, rtol=1e-4), name
        moved += not torch.allclose(initial[name], value.detach())
    assert moved > len(expected) // 2, "the reference barely trained; the comparison would prove nothing"
