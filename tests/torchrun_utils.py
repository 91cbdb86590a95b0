"""Run tools/train.py under torchrun with 2 CPU (gloo) processes, as the DDP tests of several toolboxes do."""
from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

__all__ = ["torchrun_train"]

ROOT = Path(__file__).resolve().parents[1]

# tools/train.py's main(), then vmamba_zoo.mm.dist.shutdown_distributed() as tools/train.py's __main__ does
# (the train script is loaded from its file, so its __main__ block does not run), then the gloo threads
# still running: none may be left (they abort the interpreter's finalisation now and then, "terminate
# called without an active exception", SIGABRT: the failure this guards against).
_WORKER = """
import importlib.util
import sys

from vmamba_zoo.mm.dist import gloo_threads, shutdown_distributed

spec = importlib.util.spec_from_file_location("vmamba_zoo_tools_train", {train!r})
train_tool = importlib.util.module_from_spec(spec)
spec.loader.exec_module(train_tool)
try:
    train_tool.main(sys.argv[1:])  # the runner is not kept (shutdown_distributed needs it gone)
finally:
    shutdown_distributed()
# one write (both ranks print at once; print() writes the text and the newline separately)
sys.stderr.write(f"gloo threads at exit: {{gloo_threads()}}\\n")
sys.stderr.flush()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_train(config: Path, work: Path, *args: str) -> str:
    """``torchrun --nproc_per_node=2 tools/train.py CONFIG --launcher pytorch --work-dir WORK *args``.

    Asserts that it exits 0 and ran distributed on two processes; returns the combined log."""
    script = work.parent / "torchrun_train.py"
    script.write_text(_WORKER.format(train=str(ROOT / "tools" / "train.py")))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
           str(script), str(config), "--launcher", "pytorch", "--work-dir", str(work), *args]
    # Put this checkout first on the workers' path.
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "Distributed training: True" in log and "GPU number: 2" in log, log[-4000:]
    exits = re.findall(r"gloo threads at exit: \[[^\]]*\]", log)
    assert len(exits) == 2, log[-4000:]
    leftover = [line for line in exits if not line.endswith("[]")]
    assert not leftover, f"gloo threads still running after shutdown_distributed(): {leftover}"
    return log
