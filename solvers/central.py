"""The central flow: gradient descent's time-averaged trajectory at the edge of stability."""
from __future__ import annotations

from gfbench.central import TABLEAUX, CentralField, CentralIntegration
from gfbench.curvature.eigen import UNIT_INTERVAL
from gfbench.curvature.hessian import DENSE_MAX_DIM
from gfbench.params import AT_LEAST_ONE, POSITIVE, Bounds, ConfigError, Param
from gfbench.solver import Solver

EIGENSOLVERS = ("auto", "dense", "lanczos")
#: eigensolver=auto uses the dense Hessian up to this d, Lanczos above.
AUTO_DENSE_MAX_DIM = 200


class Central(Solver):
    """Central flow dθ/dt = −[∇f + ½ ∇⟨Σ, ∇²f⟩], Σ = U X Uᵀ on the eigenvalues ≥ c·2/η (Cohen et al. 2024–25).

    X ⪰ 0 solves the semidefinite complementarity problem that holds the critical eigenvalues at
    2/η (pulled back at rate κ = r/η when off it); ``gfbench.central`` derives it. Without an
    eigenvalue at the edge it is gradient flow. Fixed-step ``method`` (rk4 or euler) with
    ``substeps`` steps per GD step. Each evaluation: one gradient, one eigensolve (dense: d HVPs;
    Lanczos: its products), and with k critical eigenvalues k HVPs plus k third-order backward
    passes (``n_third_order``). Records ``central_n_critical``, ``central_variance`` (eigenvalues
    of X), ``central_predicted_loss`` f + tr(X)/η and ``central_sharpness`` at every record point.
    """

    name = "central"
    parameters = (
        Param("critical_fraction", float, 0.975, "an eigenvalue is critical when >= critical_fraction * 2/lr",
              bounds=Bounds(0, 1, low_open=True)),
        Param("relaxation", float, 1.0, "rate, per GD step, at which a critical eigenvalue off 2/lr is pulled "
              "back (kappa = relaxation/lr)", bounds=POSITIVE),
        Param("method", str, "rk4", "fixed-step explicit Runge-Kutta method", choices=tuple(TABLEAUX)),
        Param("substeps", int, 4, "integration steps per GD step", bounds=AT_LEAST_ONE),
        Param("max_critical", int, 8, "most eigenvalues at the edge at once", bounds=Bounds(1, 16)),
        Param("eigensolver", str, "auto", f"top eigenpairs: dense eigh, or Lanczos (auto: dense for d <= "
              f"{AUTO_DENSE_MAX_DIM})", choices=EIGENSOLVERS),
        Param("eig_tol", float, 1e-9, "Lanczos residual tolerance relative to ||H||", bounds=UNIT_INTERVAL),
    )

    def check_problem(self, problem) -> None:
        if self.options["eigensolver"] == "dense" and problem.dim > DENSE_MAX_DIM:
            raise ConfigError(f"solver 'central' with eigensolver=dense needs d <= {DENSE_MAX_DIM}; problem "
                              f"{problem.name!r} has d={problem.dim} (use eigensolver=lanczos)")

    def effective_options(self, problem, dtype):
        options = dict(self.options)
        if options["eigensolver"] == "auto":
            options["eigensolver"] = "dense" if problem.dim <= AUTO_DENSE_MAX_DIM else "lanczos"
        return options

    def start(self, field, theta0, lr) -> CentralIntegration:
        options = self.effective_options(field.problem, theta0.dtype)
        central = CentralField(field, lr, fraction=options["critical_fraction"], relaxation=options["relaxation"],
                               max_critical=options["max_critical"], eigensolver=options["eigensolver"],
                               eig_tol=options["eig_tol"])
        return CentralIntegration(field, theta0, lr, central, method=options["method"], substeps=options["substeps"])
