"""The principal flow: the real flow whose time-η map is GD on a quadratic."""
from __future__ import annotations

import torch

from gfbench.curvature.hessian import dense_hessian
from gfbench.ode import FLOW_PARAMETERS, Flow, FlowSolver, FlowUndefined
from gfbench.params import AT_LEAST_ONE, ConfigError, Param


def principal_coefficient(z: torch.Tensor) -> torch.Tensor:
    """log(1 − z)/z elementwise for z < 1, with its limit −1 at z = 0."""
    zero = z == 0
    safe = torch.where(zero, torch.ones_like(z), z)
    return torch.where(zero, -torch.ones_like(z), torch.log1p(-safe) / safe)


class Principal(FlowSolver):
    """Principal flow dθ/dt = Σ_i [log(1 − ηλ_i)/(ηλ_i)] (u_iᵀ∇f) u_i (Rosca et al. 2023).

    The sum runs over the eigenpairs (λ_i, u_i) of the Hessian ∇²f(θ).

    On f = ½(θ − θ*)ᵀA(θ − θ*) it is dθ/dt = (1/η) log(I − ηA)(θ − θ*), whose solution at t = kη
    is exactly GD's θ* + (I − ηA)^k(θ0 − θ*). The coefficient is −1 at λ = 0 (gradient flow) and
    negative for every ηλ < 1. Where some ηλ_i ≥ 1 the logarithm has no real value (GD
    oscillates or stalls along u_i): the run stops there with ``status=solver_failed`` and
    says so — no real part is taken.

    Every evaluation forms the dense Hessian (d HVPs, counted in ``n_hvp``) and its eigh, O(d³):
    problems with d > ``max_dim`` are refused before any computation.
    """

    name = "principal"
    parameters = FLOW_PARAMETERS + (
        Param("max_dim", int, 200, "largest parameter count d accepted (dense d x d Hessian and eigh per "
              "evaluation)", bounds=AT_LEAST_ONE),
    )

    def check_problem(self, problem) -> None:
        if problem.dim > self.options["max_dim"]:
            raise ConfigError(f"solver 'principal' needs a dense Hessian eigendecomposition and accepts d <= "
                              f"max_dim={self.options['max_dim']}; problem {problem.name!r} has d={problem.dim} "
                              f"(raise max_dim knowingly: O(d^3) work per evaluation)")

    def flow(self, field, theta0, lr) -> Flow:
        def rhs(theta):
            hessian = dense_hessian(field.problem, theta, max_dim=self.options["max_dim"], field=field)
            eigenvalues, eigenvectors = torch.linalg.eigh(hessian)
            z = lr * eigenvalues
            if z.max() >= 1:
                raise FlowUndefined(f"lr*lambda_max = {float(z.max()):.6g} >= 1: the principal flow is complex "
                                    f"(log(1 - lr*lambda) of a non-positive number)")
            return eigenvectors @ (principal_coefficient(z) * (eigenvectors.T @ field.gradient(theta)))

        return Flow(rhs=rhs)
