import os
import socket
import subprocess
import sys

import torch

from betavae.checkpoint import load_checkpoint, strip_prefix
from betavae.runs import RunPaths, read_csv, read_info


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_process_ddp_run_under_torchrun_on_cpu(tmp_path):
    """torchrun with the gloo backend: both ranks train, rank 0 writes one consistent run."""
    out = tmp_path / "ddp"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1", f"--master_port={free_port()}",
        "-m", "betavae.cli", "train", "--out", str(out), "--no-figures",
        "--set", "data.num_images=128", "--set", "data.image_size=32", "--set", "model.preset=tiny",
        "--set", "train.max_steps=4", "--set", "train.batch_size=16", "--set", "train.progress=false",
        "--set", "train.checkpoint_every=2",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    info = read_info(RunPaths(out))
    assert info["status"] == "finished" and info["step"] == 4
    assert [row["step"] for row in read_csv(RunPaths(out).train_log)] == [1, 2, 3, 4]
    tensors, state = load_checkpoint(RunPaths(out).last)
    weights = strip_prefix("model", tensors)
    assert state["step"] == 4 and all(torch.isfinite(w.float()).all() for w in weights.values())


def test_each_rank_leaves_the_process_group_before_the_interpreter_shuts_down(tmp_path):
    """start_workers destroys the group at exit (before interpreter shutdown, where gloo can
    abort the process): an exit handler registered before it runs after it and sees no group."""
    script = tmp_path / "rank.py"
    script.write_text(
        "import atexit, torch, torch.distributed as dist\n"
        "from betavae.distributed import start_workers\n"
        "atexit.register(lambda: print(f'group at exit: {dist.is_initialized()}', flush=True))\n"
        "workers = start_workers(torch.device('cpu'))\n"
        "workers.barrier()\n"
        "print(f'joined {workers.world_size}', flush=True)\n")  # one write per line: ranks share stdout
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
               f"--master_port={free_port()}", str(script)]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("joined 2") == 2
    assert result.stdout.count("group at exit: False") == 2, result.stdout
