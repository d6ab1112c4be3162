"""Curvature cost ratios on a 784-50-50-10 tanh MLP with MNIST-shaped random data (float64, CPU).

1. HVP time / gradient time for both HVP methods: per product at a fixed point (graph reused)
   and for a single product at a fresh point (double backward then also builds the gradient graph).
2. λmin and λmax to 1e-6: gfbench's Lanczos (one solve for both ends, cold and warm-started
   along a GD trajectory) against scipy.sparse.linalg.eigsh with which='LA' plus which='SA'
   (ARPACK, tol=1e-6) on the same HVP LinearOperator. Reports times, products and ratios.

Run: ``python scripts/curvature_ratios.py [--samples N] [--points P]``. Not collected by asv or pytest.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator, eigsh

from gfbench.curvature import HVP_METHODS, HessianOperator, lanczos

WIDTHS = (784, 50, 50, 10)


class MLP:
    """f(θ) = mean cross-entropy of a tanh MLP 784-50-50-10 (weights and biases flattened in θ)."""

    def __init__(self, samples: int, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.inputs = torch.rand(samples, WIDTHS[0], generator=generator, dtype=torch.float64)
        self.labels = torch.randint(0, WIDTHS[-1], (samples,), generator=generator)
        self.shapes = [shape for fan_in, fan_out in zip(WIDTHS[:-1], WIDTHS[1:])
                       for shape in ((fan_out, fan_in), (fan_out,))]
        self.dim = sum(int(np.prod(shape)) for shape in self.shapes)
        self.generator = generator

    def init(self) -> torch.Tensor:
        parts = []
        for shape in self.shapes:
            fan_in = shape[1] if len(shape) == 2 else 1
            parts.append(torch.randn(shape, generator=self.generator, dtype=torch.float64).reshape(-1)
                         / np.sqrt(fan_in) * (len(shape) == 2))
        return torch.cat(parts)

    def loss(self, theta: torch.Tensor) -> torch.Tensor:
        chunks = torch.split(theta, [int(np.prod(shape)) for shape in self.shapes])
        h = self.inputs
        for i in range(0, len(chunks), 2):
            h = h @ chunks[i].view(self.shapes[i]).T + chunks[i + 1]
            if i + 2 < len(chunks):
                h = torch.tanh(h)
        return torch.nn.functional.cross_entropy(h, self.labels)


def best_times(functions: dict, repeats: int) -> dict[str, float]:
    """The fastest of ``repeats`` timings of each function, interleaved so that load from other
    processes falls on all of them alike (the minimum is the least disturbed run)."""
    best = {name: float("inf") for name in functions}
    for function in functions.values():
        function()  # warm-up
    for _ in range(repeats):
        for name, function in functions.items():
            started = time.perf_counter()
            function()
            best[name] = min(best[name], time.perf_counter() - started)
    return best


def gradient(problem: MLP, theta: torch.Tensor) -> torch.Tensor:
    leaf = theta.detach().requires_grad_(True)
    return torch.autograd.grad(problem.loss(leaf), leaf)[0]


def hvp_ratios(problem: MLP, theta: torch.Tensor, repeats: int) -> None:
    v = torch.randn(problem.dim, dtype=torch.float64)
    functions = {"gradient": lambda: gradient(problem, theta)}
    for method in HVP_METHODS:
        operator = HessianOperator(problem, theta, method)
        functions[f"{method} per product"] = lambda operator=operator: operator.matvec(v)
        functions[f"{method} at a fresh point"] = (
            lambda method=method: HessianOperator(problem, theta, method).matvec(v))
    best = best_times(functions, repeats)
    grad_time = best.pop("gradient")
    print(f"gradient: {grad_time * 1e3:.2f} ms (d={problem.dim}, {problem.inputs.shape[0]} samples)")
    for name, seconds in best.items():
        print(f"HVP {name}: {seconds * 1e3:.2f} ms = {seconds / grad_time:.2f} x gradient")


def eigsh_both_ends(operator: HessianOperator, tol: float) -> tuple[float, float]:
    scipy_operator = LinearOperator((operator.size, operator.size), dtype=np.float64,
                                    matvec=lambda x: operator.matvec(torch.from_numpy(np.ascontiguousarray(
                                        x.reshape(-1)))).numpy())
    largest = eigsh(scipy_operator, k=1, which="LA", tol=tol, return_eigenvectors=False)[0]
    smallest = eigsh(scipy_operator, k=1, which="SA", tol=tol, return_eigenvectors=False)[0]
    return float(smallest), float(largest)


def eigen_ratios(problem: MLP, theta: torch.Tensor, points: int, gd_steps: int, lr: float, tol: float) -> None:
    """Both ends at ``points`` GD iterates ``gd_steps`` apart. "strict" runs use ARPACK's criterion for
    both ends, residual <= tol*|lambda| (ours is residual <= tol*||H||), set from the previous point."""
    names = ("lanczos cold", "lanczos warm", "lanczos warm strict", "eigsh LA+SA")
    totals = {name: [0.0, 0] for name in names}
    lanczos(HessianOperator(problem, theta), tol=tol)  # warm-up: one-time allocator and autograd costs
    eigsh_both_ends(HessianOperator(problem, theta), tol)
    previous = {"lanczos warm": None, "lanczos warm strict": None}
    strict_tol = tol
    worst = 0.0
    for point in range(points):
        values = {}
        for name in names:
            operator = HessianOperator(problem, theta)
            started = time.perf_counter()
            if name == "eigsh LA+SA":
                values[name] = eigsh_both_ends(operator, tol)
            else:
                result = lanczos(operator, tol=strict_tol if name.endswith("strict") else tol, seed=point,
                                 v0=previous.get(name))
                values[name] = (result.min, result.max)
                if name in previous:
                    previous[name] = result.eigenvectors
            totals[name][0] += time.perf_counter() - started
            totals[name][1] += operator.n_matvec
        reference = values["eigsh LA+SA"]
        strict_tol = tol * min(abs(v) for v in reference) / max(abs(v) for v in reference)
        for name in names[:-1]:
            for ours, theirs in zip(values[name], reference):
                worst = max(worst, abs(ours - theirs) / abs(theirs))
        print(f"point {point}: lambda_min={reference[0]:.6e} lambda_max={reference[1]:.6e}")
        for _ in range(gd_steps):
            theta = theta - lr * gradient(problem, theta)
    for name, (seconds, products) in totals.items():
        print(f"{name}: {seconds:.2f} s, {products} HVPs over {points} points")
    eigsh_time, eigsh_products = totals["eigsh LA+SA"]
    for name in names[:-1]:
        seconds, products = totals[name]
        print(f"eigsh / {name}: time {eigsh_time / seconds:.2f}x, HVPs {eigsh_products / products:.2f}x")
    print(f"largest relative difference lanczos vs eigsh (lambda_min, lambda_max): {worst:.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--points", type=int, default=6, help="trajectory points for the eigensolver comparison")
    parser.add_argument("--gd-steps", type=int, default=1, help="GD steps between two points")
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--tol", type=float, default=1e-6)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: on a loaded machine, thread contention swamps the ratios)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    problem = MLP(args.samples)
    theta = problem.init()
    hvp_ratios(problem, theta, args.repeats)
    eigen_ratios(problem, theta, args.points, args.gd_steps, args.lr, args.tol)


if __name__ == "__main__":
    main()
