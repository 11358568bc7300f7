"""Thread settings of the training step under the load at hand: torch's default (all cores, libgomp's
active spin-wait), ``OMP_WAIT_POLICY=PASSIVE`` (threads sleep at barriers instead of spinning),
``GOMP_SPINCOUNT=10000`` (a short spin) and one thread, for betavae's channels_last step and for the
reference eager NCHW step (the baseline: reference loop, default settings).

These are read when libgomp starts, so each measurement is a fresh process (the `paper` preset,
fp32, batch 64: build, 2 warm-up steps, 3 timed steps), the settings interleaved round by round. On an idle machine all cores with the default wait policy is the
baseline to beat; when other processes share the cores, threads that spin while their partner is
descheduled waste the step. The wait policy changes no result (only how idle threads wait); the
thread count does change the float summation order.
"""
from __future__ import annotations

import os
import subprocess
import sys

from common import load_average, parser, report, table

CHILD = r"""
import time, torch
from betavae.model import PRESETS, ConvVAE
from betavae.objectives import BetaVAE
objective = BetaVAE(beta=10, kld_weight=0.0025, reconstruction="mse_mean")
torch.manual_seed(0)
model = ConvVAE(64, 3, **PRESETS["paper"]).train()
x = torch.rand(64, 3, 64, 64)
if LAYOUT == "reference":  # eager NCHW, a fresh tensor per LeakyReLU
    for module in model.modules():
        if isinstance(module, torch.nn.LeakyReLU):
            module.inplace = False
else:
    model = model.to(memory_format=torch.channels_last)
    x = x.contiguous(memory_format=torch.channels_last)
optimizer = torch.optim.Adam(model.parameters(), lr=5e-4)
def step():
    loss = objective(x, model(x)).loss
    optimizer.zero_grad(set_to_none=True); loss.backward(); optimizer.step()
step(); step()
started = time.perf_counter()
for _ in range(STEPS):
    step()
print(64 * STEPS / (time.perf_counter() - started))
"""
DEFAULT = "reference eager NCHW, default (all cores, active wait)"
SETTINGS = {DEFAULT: ("reference", {}),
            "reference eager NCHW, OMP_WAIT_POLICY=PASSIVE": ("reference", {"OMP_WAIT_POLICY": "PASSIVE"}),
            "channels_last, default": ("channels_last", {}),
            "channels_last, OMP_WAIT_POLICY=PASSIVE": ("channels_last", {"OMP_WAIT_POLICY": "PASSIVE"}),
            "channels_last, GOMP_SPINCOUNT=10000": ("channels_last", {"GOMP_SPINCOUNT": "10000"}),
            "channels_last, 1 thread": ("channels_last", {"OMP_NUM_THREADS": "1"})}


def measure(layout: str, extra_env: dict, steps: int) -> float:
    env = {key: value for key, value in os.environ.items()
           if key not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")}
    child = f"LAYOUT, STEPS = {layout!r}, {steps}\n" + CHILD
    out = subprocess.run([sys.executable, "-c", child], env={**env, **extra_env},
                         capture_output=True, text=True, check=True).stdout
    return float(out.strip().splitlines()[-1])


def main() -> None:
    args = parser(__doc__).parse_args()
    repeats, steps = (2, 2) if args.quick else (4, 3)
    values = {name: [] for name in SETTINGS}
    loads = []
    for _ in range(repeats):
        for name, (layout, extra) in SETTINGS.items():
            values[name].append(measure(layout, extra, steps))
            loads.append(load_average())
    title = f"Thread settings, `paper` fp32 training step, batch 64 ({repeats} rounds, a process each)"
    note = (f"1-minute load average during the rounds: {min(loads)}–{max(loads)} "
            f"on {os.cpu_count()} CPUs (above ~0.5: the cores were shared).")
    report("thread_policy", [table(title, values, DEFAULT) + "\n\n" + note],
           {"steps": steps, "repeats": repeats, "images_per_s": values, "load_average": loads})


if __name__ == "__main__":
    main()
