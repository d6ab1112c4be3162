"""Curvature of the loss along trajectories: Hessian-vector products, extreme eigenvalues by
Lanczos (or densely for small d), and the recorder that puts them into a run's dataset."""
from .eigen import DEFAULT_TOL, FLOAT32_MIN_TOL, EigenResult, certified_lanczos, dense_eigenpairs, lanczos
from .hessian import (DEFAULT_HVP, DENSE_MAX_DIM, HVP_METHODS, CastOperator, HessianOperator, MatrixOperator,
                      dense_hessian, gradient_and_hessian_gradient, hessian_vector_product,
                      third_derivative_contractions)
from ..timeaxis import cumulative_integral
from .recorder import CurvatureRecorder, check_curvature_options

__all__ = ["HessianOperator", "MatrixOperator", "CastOperator", "dense_hessian", "hessian_vector_product",
           "gradient_and_hessian_gradient", "third_derivative_contractions", "lanczos", "certified_lanczos",
           "dense_eigenpairs", "FLOAT32_MIN_TOL", "EigenResult", "CurvatureRecorder", "check_curvature_options",
           "cumulative_integral", "HVP_METHODS", "DEFAULT_HVP", "DEFAULT_TOL", "DENSE_MAX_DIM"]
