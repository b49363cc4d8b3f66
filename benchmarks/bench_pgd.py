"""p-GD (lemmata.optim.PGD) against torch.optim.SGD, as ratios in one process.

The four figures of issue 3, on a ResNet-style CNN for 28x28 inputs (65
parameter tensors, 0.27M weights), one CPU thread, float32, p = 3:

1. the whole training step (forward, backward, optimizer step) at batch 128,
   PGD over SGD(foreach=True); target <= 1.10;
2. the optimizer step alone, a straightforward per-parameter p-GD that
   recomputes the mirror map every step over PGD, both without a non-finite
   check and both with one (the per-tensor check lemmata had before, against
   the fused one); target >= 3;
3. the optimizer step alone, PGD over SGD(foreach=True), reported;
4. optimizer memory, PGD over SGD(momentum=0.9): the persistent state, and
   the peak of state plus temporaries during one step (counted with a
   TorchDispatchMode that tracks the tensors created); target: at most one
   extra buffer per parameter.

Run with ``python benchmarks/run.py bench_pgd``. Times are CPU seconds of
the calling thread; the two sides alternate in blocks and the median of the
per-block ratios is reported, which is robust to other load on the machine.
A table of the step alone by p and code path follows figure 3.
"""

from __future__ import annotations

import statistics
import time
import warnings
import weakref

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from lemmata.optim import PGD

BATCH = 128
P = 3.0
LR = 1e-3


class _Block(nn.Module):
    """A ResNet basic block: two 3x3 convolutions with batch norm, plus a skip."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.skip = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.skip = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.skip(x))


def resnet(width: int = 16, blocks: int = 3) -> nn.Module:
    """ResNet-20 layout (3 stages of ``blocks`` blocks) for 1x28x28 inputs."""
    layers: list[nn.Module] = [
        nn.Conv2d(1, width, 3, 1, 1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(),
    ]
    c_in = width
    for stage, c_out in enumerate((width, 2 * width, 4 * width)):
        for b in range(blocks):
            stride = 2 if stage > 0 and b == 0 else 1
            layers.append(_Block(c_in, c_out, stride))
            c_in = c_out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, 10)]
    return nn.Sequential(*layers)


def naive_pgd_step(
    params: list[torch.Tensor], lr: float, p: float, check: bool = False
) -> None:
    """The straightforward p-GD step: per parameter, mirror map recomputed.

    With ``check``, first the per-tensor non-finite check that lemmata used
    before the fused one (an ``isfinite().all()`` per gradient, stacked).
    """
    with torch.no_grad():
        if check and not bool(
            torch.stack([torch.isfinite(w.grad).all() for w in params]).all()
        ):
            raise ValueError("non-finite gradient")
        for w in params:
            dual = w.sign() * w.abs().pow(p - 1)
            dual = dual - lr * w.grad
            w.copy_(dual.sign() * dual.abs().pow(1 / (p - 1)))


def _model_with_grads(seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    model = resnet()
    x = torch.randn(BATCH, 1, 28, 28)
    y = torch.randint(0, 10, (BATCH,))
    nn.functional.cross_entropy(model(x), y).backward()
    return model, x, y


def _time(fn, repeat: int) -> float:
    """CPU seconds of this thread per call: robust to other load on the machine."""
    start = time.thread_time()
    for _ in range(repeat):
        fn()
    return (time.thread_time() - start) / repeat


def _median_ratio(fn_a, fn_b, rounds: int, repeat: int) -> tuple[float, float, float]:
    """Median over rounds of time(a)/time(b), alternating; also the medians."""
    fn_a(), fn_b()  # warm-up
    ratios, times_a, times_b = [], [], []
    for _ in range(rounds):
        a = _time(fn_a, repeat)
        b = _time(fn_b, repeat)
        ratios.append(a / b)
        times_a.append(a)
        times_b.append(b)
    return (
        statistics.median(ratios),
        statistics.median(times_a),
        statistics.median(times_b),
    )


def _pgd(params, **kwargs) -> PGD:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # p > 6 and p < 1.2 warn
        return PGD(params, lr=LR, **kwargs)


def training_step_ratio(rounds: int = 9, repeat: int = 1) -> None:
    model_pgd, x, y = _model_with_grads()
    model_sgd, _, _ = _model_with_grads()
    pgd = _pgd(model_pgd.parameters(), p=P)
    sgd = torch.optim.SGD(model_sgd.parameters(), lr=LR, foreach=True)

    def step(model, optimizer):
        def run():
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()

        return run

    ratio, t_pgd, t_sgd = _median_ratio(
        step(model_pgd, pgd), step(model_sgd, sgd), rounds, repeat
    )
    print(
        f"1. training step (fwd+bwd+step, batch {BATCH}), PGD(p={P:g}) / SGD: "
        f"{ratio:.3f}x  (target <= 1.10; {t_pgd * 1e3:.1f} vs {t_sgd * 1e3:.1f} ms)"
    )


def step_alone_ratios(rounds: int = 40, repeat: int = 5) -> None:
    model, _, _ = _model_with_grads()
    params = list(model.parameters())
    n_tensors = len(params)
    n_weights = sum(w.numel() for w in params)
    # Each optimizer keeps stepping the same weights with the same gradients;
    # the lr is small, so the weights stay in range.
    pgd = _pgd(params, p=P)
    unchecked = _pgd(params, p=P, check_finite=False)
    sgd = torch.optim.SGD(params, lr=LR, foreach=True)

    ratio, t_naive, t_pgd = _median_ratio(
        lambda: naive_pgd_step(params, LR, P), unchecked.step, rounds, repeat
    )
    ratio_checked, t_checked, t_default = _median_ratio(
        lambda: naive_pgd_step(params, LR, P, check=True), pgd.step, rounds, repeat
    )
    print(
        f"2. optimizer step alone ({n_tensors} tensors, {n_weights} weights), "
        f"per-parameter recomputing p-GD / PGD: {ratio:.2f}x without a "
        f"non-finite check on either side ({t_naive * 1e3:.2f} vs "
        f"{t_pgd * 1e3:.2f} ms), {ratio_checked:.2f}x with one on both "
        f"({t_checked * 1e3:.2f} vs {t_default * 1e3:.2f} ms)  (target >= 3)"
    )
    ratio, t_pgd, t_sgd = _median_ratio(pgd.step, sgd.step, rounds, repeat)
    print(
        f"3. optimizer step alone, PGD / SGD(foreach=True): {ratio:.2f}x  "
        f"(reported; {t_pgd * 1e3:.2f} vs {t_sgd * 1e3:.3f} ms)"
    )

    print("   step alone by p and path, time / SGD(foreach=True) step:")
    for p in (1.1, 1.5, 2.0, 3.0, 10.0):
        cells = []
        for label, kwargs in (
            ("default", {}),
            ("dual_state=False", {"dual_state": False}),
            ("foreach=False", {"foreach": False}),
            ("naive", None),
        ):
            if kwargs is None:

                def fn(p=p):
                    naive_pgd_step(params, LR, p)

            else:
                fn = _pgd(params, p=p, **kwargs).step
            r, _, _ = _median_ratio(fn, sgd.step, 10, 3)
            cells.append(f"{label} {r:5.1f}x")
        print(f"   p={p:<4g} " + " | ".join(cells))


class _LiveBytes(TorchDispatchMode):
    """Bytes of tensors created inside the mode and still alive; tracks the peak."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._ptrs: set[int] = set()

    def _free(self, ptr: int, nbytes: int) -> None:
        self._ptrs.discard(ptr)
        self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        seen = {
            t.untyped_storage().data_ptr()
            for t in tree_leaves((args, kwargs))
            if isinstance(t, torch.Tensor)
        }
        for t in tree_leaves(out):
            if not isinstance(t, torch.Tensor):
                continue
            ptr = t.untyped_storage().data_ptr()
            if ptr in seen or ptr in self._ptrs or ptr == 0:
                continue
            nbytes = t.untyped_storage().nbytes()
            self._ptrs.add(ptr)
            self.live += nbytes
            self.peak = max(self.peak, self.live)
            weakref.finalize(t, self._free, ptr, nbytes)
        return out


def memory_ratio() -> None:
    model, _, _ = _model_with_grads()
    params = list(model.parameters())
    param_bytes = sum(w.numel() * w.element_size() for w in params)
    results = {}
    for name, make in (
        ("SGD(momentum=0.9)", lambda: torch.optim.SGD(params, lr=LR, momentum=0.9)),
        ("PGD", lambda: _pgd(params, p=P)),
        ("PGD(dual_state=False)", lambda: _pgd(params, p=P, dual_state=False)),
    ):
        optimizer = make()
        optimizer.step()  # creates the state
        tracker = _LiveBytes()
        with tracker:
            optimizer.step()
        state = sum(
            v.numel() * v.element_size()
            for s in optimizer.state.values()
            for v in s.values()
            if isinstance(v, torch.Tensor)
        )
        results[name] = (state, state + tracker.peak)
    sgd_state, sgd_peak = results["SGD(momentum=0.9)"]
    pgd_state, pgd_peak = results["PGD"]
    print(
        f"4. optimizer memory, PGD / SGD(momentum=0.9): state "
        f"{pgd_state / sgd_state:.2f}x ({pgd_state / param_bytes:.2f} buffers per "
        f"parameter; target: at most one extra), peak during a step "
        f"{pgd_peak / sgd_peak:.2f}x"
    )
    for name, (state, peak) in results.items():
        print(
            f"   {name:22s} state {state / param_bytes:.2f}, peak state + "
            f"temporaries {peak / param_bytes:.2f} (in parameter sizes)"
        )


def main() -> None:
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, 1 thread, float32, p={P:g}, lr={LR:g}")
    training_step_ratio()
    step_alone_ratios()
    memory_ratio()


if __name__ == "__main__":
    main()
