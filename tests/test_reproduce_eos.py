"""gfbench reproduce eos end to end at tiny size: files, distances and summary against numpy on the datasets."""
import numpy as np
import pytest
import xarray as xr

import gfbench
from gfbench.cli import main
from gfbench.reproduce_eos import BAND, ENTRY, LOSS_WINDOW, edge_entry, window_average
from zoo_support import requires_mnist

pytestmark = requires_mnist
TINY = ["--param", "pool=14", "--param", "hidden=3", "--param", "classes=0,1", "--param", "n_train=10"]
FLOWS = ["gf", "igr", "second_order", "central", "principal"]


def test_window_average_is_the_centred_mean():
    loss = np.random.default_rng(0).random(50)
    averaged = window_average(loss, 4)
    for k in range(50):
        expected = np.mean(loss[k - 2:k + 2]) if 2 <= k <= 48 else np.nan
        np.testing.assert_allclose(averaged[k], expected, rtol=1e-14)


def test_edge_entry_counts_the_band_from_the_first_point_at_the_edge():
    scaled = [0.5, np.nan, 1.89, 1.9, 2.4, np.nan, 2.3, 1.79, 1.8, 2.0]
    ds = xr.Dataset({"sharpness_times_lr": ("time", scaled)}, coords={"time": np.arange(10.0)})
    assert edge_entry(ds) == (3.0, 4 / 6)  # 1.9, 2.3, 1.8, 2.0 in [1.8, 2.3]; 2.4 and 1.79 out
    assert edge_entry(ds.isel(time=slice(0, 3))) == (None, None)


@pytest.fixture(scope="module")
def reproduction(tmp_path_factory):
    folder = tmp_path_factory.mktemp("eos")
    result = main(["reproduce", "eos", "--lrs", "0.5,1", "--steps", "100", *TINY, "--out", str(folder),
                               "--quiet"])
    assert result == 0
    return folder


def test_files_and_runs(reproduction):
    names = sorted(p.name for p in reproduction.iterdir())
    assert names == sorted(["gd-lr0.5.nc", "gd-lr1.nc", *(f"{flow}.nc" for flow in FLOWS), "comparison.nc", "eos.png",
                            "summary.txt"])
    gd = gfbench.load(reproduction / "gd-lr1.nc")
    assert gd.attrs["steps"] == 50 and float(gd.time[-1]) == 50.0  # the horizon T = 100 * 0.5
    for flow in FLOWS:
        ds = gfbench.load(reproduction / f"{flow}.nc")
        assert ds.attrs["lr"] == 0.5 and ds.attrs["solver"] == flow
    # lr * lambda_max > 1 at the edge: the principal flow is complex there and stops
    assert gfbench.load(reproduction / "principal.nc").attrs["status"] == "solver_failed"


def test_comparison_distances_match_numpy(reproduction):
    gd = gfbench.load(reproduction / "gd-lr0.5.nc")
    comparison = gfbench.load(reproduction / "comparison.nc")
    assert list(comparison.run.values) == FLOWS
    for flow in FLOWS:
        ds = gfbench.load(reproduction / f"{flow}.nc")
        steps = ds.step.values
        expected = np.linalg.norm(ds.theta.values - gd.theta.values[steps], axis=1)  # gd records every step
        measured = comparison.distance.sel(run=flow).sel(time=ds.time.values).values
        np.testing.assert_allclose(measured, expected, rtol=1e-12, atol=1e-15)


def test_summary_reports_the_edge_distances_and_predicted_loss(reproduction):
    text = (reproduction / "summary.txt").read_text()
    lines = text.splitlines()
    gd = gfbench.load(reproduction / "gd-lr0.5.nc")
    scaled = gd.hessian_max_eig.values * 0.5
    evaluated = np.flatnonzero(~np.isnan(scaled))
    first = next(i for i in evaluated if scaled[i] >= ENTRY)
    later = scaled[evaluated[evaluated >= first]]
    fraction = np.mean((later >= BAND[0]) & (later <= BAND[1]))
    row = next(line for line in lines if line.split()[0] == "0.5").split()
    assert row[2] == f"{float(gd.time[first]):g}" and row[3] == f"{fraction:.1%}"
    gf_final = None
    for flow in FLOWS:
        ds = gfbench.load(reproduction / f"{flow}.nc")
        final = float(np.linalg.norm(ds.theta.values[-1] - gd.theta.values[ds.step.values[-1]]))
        gf_final = final if flow == "gf" else gf_final
        row = next(line for line in lines if line.startswith(flow + " ")).split()
        assert row[1] == ds.attrs["status"] and row[3] == f"{final:.4e}" and row[4] == f"{final / gf_final:.3f}"
        assert row[6] == f"{ds.attrs['n_grad_evals'] / gd.attrs['n_grad_evals']:.2f}"
    central = gfbench.load(reproduction / "central.nc")
    loss = gd.loss.values
    errors = []
    for step, predicted in zip(central.step.values, central.central_predicted_loss.values):
        if step >= first and step - LOSS_WINDOW // 2 >= 0 and step + LOSS_WINDOW // 2 <= len(loss):
            window = np.mean(loss[step - LOSS_WINDOW // 2:step + LOSS_WINDOW // 2])
            errors.append(abs(predicted - window) / window)
    assert f"mean |relative error| {np.mean(errors):.3%}, max {np.max(errors):.3%} ({len(errors)} points)" in text
