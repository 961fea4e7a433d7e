"""A 2-process CPU (gloo) DDP training step of a NoRA model equals the same step in one process."""

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import nora

BATCH = 8


def tiny_model():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 32), torch.nn.GELU(), torch.nn.Linear(32, 3))
    nora.apply_nora(net, nora.NoraConfig(groups=4, rank=2, alpha=4, trainable=["2"]))
    with torch.no_grad():  # non-zero B so every factor gets a gradient on the first step
        for name, p in net.named_parameters():
            if name.endswith("_B"):
                p.normal_(0, 0.1)
    return net


def data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(BATCH, 6, generator=g), torch.randint(0, 3, (BATCH,), generator=g)


def step(model, x, y):
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    loss = torch.nn.functional.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()


def worker(rank, world, port, out_path):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    model = torch.nn.parallel.DistributedDataParallel(tiny_model())
    x, y = data()
    half = BATCH // world
    step(model, x[rank * half : (rank + 1) * half], y[rank * half : (rank + 1) * half])
    if rank == 0:
        torch.save({k: v.detach() for k, v in model.module.state_dict().items()}, out_path)
    dist.barrier()
    dist.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_ddp_step_matches_one_process(tmp_path):
    out = tmp_path / "ddp.pt"
    mp.spawn(worker, args=(2, free_port(), str(out)), nprocs=2, join=True)
    single = tiny_model()
    step(single, *data())
    ddp_state = torch.load(out)
    changed = 0
    for key, value in single.state_dict().items():
        torch.testing.assert_close(ddp_state[key], value, rtol=1e-5, atol=1e-6)
        changed += not torch.equal(value, tiny_model().state_dict()[key])
    assert changed >= 5  # four NoRA factors and the head moved
