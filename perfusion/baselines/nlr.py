"""Box-model nonlinear regression (Bennink et al., J. Med. Imaging 2016;3:026003), in torch.

Eq. (1) of the ReSPPINN paper: ``C(t) = F * int_{t - t_d - MTT}^{t - t_d} C_a(tau) dtau
= F * (S(t - t_d) - S(t - t_d - MTT))`` with ``S`` the running integral of the AIF, both from
:class:`perfusion.physics.CumulativeAif` (0 before the first frame, held at its last value after
the last); the AIF is the derivative of ``S`` and gives the Jacobian analytically.

The fit is non-convex in (t_d, MTT) but linear in F. Hence: (1) a grid over (t_d, MTT) with the
least-squares F in closed form for each node (variable projection), all voxels as one matrix
product; (2) batched Levenberg-Marquardt on (F, t_d, MTT) from the best node, each step
projected onto the bounds. Maps: CBF = flow_to_cbf(F), CBV = CBF * MTT / 60, Tmax = t_d + MTT/2
(:data:`perfusion.units.TMAX_CONVENTION`), delay = t_d.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from perfusion.baselines import voxel_curves, voxel_maps
from perfusion.physics import CumulativeAif, box_model_tac
from perfusion.prepared import PreparedCase
from perfusion.units import cbv_from_cbf_mtt, flow_to_cbf, tmax_box

TMAX_CONVENTION = "tmax = delay + mtt/2 (box-model NLR, Eq. (1)); delay = fitted t_d"


@dataclass
class NlrConfig:
    """Box-model NLR options; bounds in s."""

    delay_min_s: float = -2.0
    """Lower bound of t_d (a little below 0: the AIF voxel may lag some tissue)."""
    delay_max_s: float = 20.0
    """Upper bound of t_d."""
    mtt_min_s: float = 1.0
    """Lower bound of MTT (below ~1 s the fit chases single noisy frames with huge flows)."""
    mtt_max_s: float = 30.0
    """Upper bound of MTT."""
    grid_delay_step_s: float = 1.0
    """Delay spacing of the starting grid."""
    grid_mtt_n: int = 16
    """MTT nodes of the starting grid (log-spaced between the bounds)."""
    iterations: int = 30
    """Levenberg-Marquardt steps."""
    chunk: int = 4096
    """Voxels fitted at once: a few thousand keep the (voxels x nodes) arrays small enough for
    the processor's caches."""


class BoxModel:
    """Eq. (1) forward model and its Jacobian for one AIF, on the frame times ``time_s`` (T,).

    The AIF and its running integral come from :class:`perfusion.physics.CumulativeAif` on a
    uniform grid ``table_step_s`` apart (default: an eighth of the shortest frame interval), so
    every lookup is one floor and one linear interpolation, with no search; the table holds the
    exact integral at its nodes and the interpolation error is second order in the step. Its
    conventions hold here: AIF 0 before the first frame, held at its last value after the last.
    """

    def __init__(
        self, time_s: np.ndarray, aif_hu: np.ndarray, table_step_s: float | None = None
    ) -> None:
        t = np.asarray(time_s, dtype=np.float64)
        a = np.asarray(aif_hu, dtype=np.float64)
        step = float(np.min(np.diff(t))) / 8.0 if table_step_s is None else float(table_step_s)
        self.time = torch.as_tensor(t)
        self.table = CumulativeAif.from_samples(self.time, torch.as_tensor(a), step_s=step)

    def aif_at(self, t: torch.Tensor) -> torch.Tensor:
        """Interpolated AIF (ΔHU) at any times; 0 before the first frame, last value after."""
        return self.table.aif_at(t)

    def cumulative(self, t: torch.Tensor) -> torch.Tensor:
        """Running integral S(t) (ΔHU·s) of the AIF from the first frame (0 before it)."""
        return self.table(t)

    def evaluate(
        self, delay: torch.Tensor, mtt: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Unit-flow curves g (..., T) = S(t - t_d) - S(t - t_d - MTT) (Eq. (1) with F = 1, as
        :func:`perfusion.physics.box_model_tac`), and the AIF at both ends."""
        late = self.time - delay[..., None]
        s_late, a_late = self.table.both(late)
        s_early, a_early = self.table.both(late - mtt[..., None])
        return s_late - s_early, a_late, a_early

    def shape(self, delay: torch.Tensor, mtt: torch.Tensor) -> torch.Tensor:
        """Unit-flow curves g (..., T) for (...,) parameters (Eq. (1) with F = 1)."""
        return box_model_tac(self.table, self.time, 1.0, mtt[..., None], delay[..., None])

    @staticmethod
    def jacobian(
        flow: torch.Tensor, g: torch.Tensor, a_late: torch.Tensor, a_early: torch.Tensor
    ) -> torch.Tensor:
        """d C / d (F, t_d, MTT): (V, T, 3), from :meth:`evaluate`'s outputs at (t_d, MTT).

        dC/dF = g; dC/dt_d = -F (a(t - t_d) - a(t - t_d - MTT)); dC/dMTT = F a(t - t_d - MTT).
        """
        f = flow[:, None]
        return torch.stack([g, -f * (a_late - a_early), f * a_early], dim=-1)


def start_nodes(model: BoxModel, cfg: NlrConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The start grid: (K, 2) float64 (t_d, MTT) nodes in s and their unit-flow curves (K, T)."""
    delays = torch.arange(
        cfg.delay_min_s, cfg.delay_max_s + 1e-9, cfg.grid_delay_step_s, dtype=torch.float64
    )
    mtts = torch.logspace(
        np.log10(cfg.mtt_min_s * 2),
        np.log10(cfg.mtt_max_s / 1.5),
        cfg.grid_mtt_n,
        dtype=torch.float64,
    )
    d, m = torch.meshgrid(delays, mtts, indexing="ij")
    d, m = d.reshape(-1), m.reshape(-1)
    return torch.stack([d, m], dim=1), model.shape(d, m)


def node_fit(curves: torch.Tensor, shapes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each voxel's least-squares flow at each node and the node's log-likelihood, (V, K) each.

    The flow is linear least squares, kept >= 0. The log-likelihood is Gaussian relative to the
    best node, -(SSE - SSE_min) / 2 sigma^2, with sigma^2 = SSE_min / (T - 3) the voxel's own
    residual variance (0 at the best node).
    """
    g = shapes.to(curves.dtype)  # float32 curves: an argmax needs no more
    gg = (g * g).sum(-1).clamp_min(1e-12)
    cg = curves @ g.T  # (V, K)
    # residual norm at the optimal F is |c|^2 - <c,g>^2/<g,g>; keep F >= 0
    gain = torch.where(cg > 0, cg**2 / gg, torch.zeros_like(cg))
    best_gain = gain.max(dim=1, keepdim=True).values
    sse_min = ((curves * curves).sum(-1, keepdim=True) - best_gain).clamp_min(0.0)
    variance = (sse_min / max(curves.shape[-1] - 3, 1)).clamp_min(1e-12)
    return (cg / gg).clamp_min(0.0), (gain - best_gain) / (2.0 * variance)


def baseline_offsets(
    model: BoxModel,
    curves: torch.Tensor,
    cfg: NlrConfig,
    noise_sd_hu: float,
    baseline_frames: float,
) -> torch.Tensor:
    """Each voxel's constant offset (V,) ΔHU: the error its baseline subtraction left.

    The baseline is the mean of the ``baseline_frames`` (effective) frames before the bolus, so
    their noise (``noise_sd_hu`` per frame) shifts every later frame of a curve by one constant
    b of SD ``noise_sd_hu / sqrt(baseline_frames)``: b's prior. At each node of the start grid
    a curve is fitted as ``F * g + b`` (F >= 0) by least squares with that prior, in units of
    the voxel's residual variance s^2 at its best unpenalised node: a ridge of weight
    ``baseline_frames * s^2 / noise_sd_hu^2`` on b. Where the residual is the noise, the frames
    after the bolus measure b; where the box model leaves more than the noise (curves the model
    does not describe, a noiseless scan), b stays near 0 instead of absorbing the misfit. The
    offset is the mean of b over the nodes weighted by their likelihood, as :func:`grid_start`
    weighs its starts (flat prior).
    """
    shapes = start_nodes(model, cfg)[1].to(curves.dtype)  # (K, T)
    n_t = curves.shape[-1]
    sum_g, sum_gg = shapes.sum(-1), (shapes * shapes).sum(-1)  # (K,)
    g_mean = sum_g / n_t
    gg_c = ((shapes - g_mean[:, None]) ** 2).sum(-1).clamp_min(1e-12)  # centred |g|^2
    noise_var = max(float(noise_sd_hu) ** 2, 1e-12)
    out = []
    for i in range(0, len(curves), cfg.chunk):
        c = curves[i : i + cfg.chunk]
        sum_c = c.sum(-1, keepdim=True)
        cc = (c * c).sum(-1, keepdim=True)
        cg = c @ shapes.T  # (V, K)
        # the voxel's residual variance at its best node without the prior: F g + b unpenalised
        # leaves |c_c|^2 - (c_c . g_c)^2 / |g_c|^2 (centred; F >= 0), and c_c . g_c = cg - sum_c g_mean
        cg_c = cg - sum_c * g_mean
        explained = torch.where(cg_c > 0, cg_c.square() / gg_c, 0.0).amax(1, keepdim=True)
        s2 = ((cc - sum_c.square() / n_t - explained) / max(n_t - 4, 1)).clamp_min(1e-12)
        n_ridge = n_t + float(baseline_frames) * s2 / noise_var  # (V, 1): n + the ridge on b
        det = (sum_gg * n_ridge - sum_g**2).clamp_min(1e-12)
        flow = (cg * n_ridge - sum_g * sum_c) / det
        offset = (sum_gg * sum_c - sum_g * cg) / det
        negative = flow < 0
        flow = flow.clamp_min(0.0)
        offset = torch.where(negative, sum_c / n_ridge, offset)
        # penalised SSE |c - F g - b|^2 + ridge b^2 at its minimum (also the F = 0 one):
        # |c|^2 - F (c . g) - b sum(c); softmax is shift-invariant, so no minimum is taken out
        sse = cc - flow * cg - offset * sum_c
        weight = torch.softmax(-sse / (2.0 * s2), dim=1)
        out.append((weight * offset).sum(-1))
    return torch.cat(out) if out else curves.new_zeros((0,))


def node_prior(log_likelihood: torch.Tensor, iterations: int) -> torch.Tensor:
    """Log-probabilities (K,) of the grid nodes among the voxels of ``log_likelihood`` (V, K).

    Expectation-maximisation of the mixing weights (each voxel's (t_d, MTT) drawn from one
    distribution over the nodes), from the flat prior: each iteration sets the prior to the mean
    of the voxels' posteriors. A few iterations keep it smooth; 0 returns the flat prior.
    """
    k = log_likelihood.shape[1]
    log_prior = torch.full((k,), -float(np.log(k)), dtype=log_likelihood.dtype)
    for _ in range(iterations):
        posterior = torch.softmax(log_likelihood + log_prior, dim=1)
        log_prior = posterior.mean(0).clamp_min(1e-30).log()
    return log_prior


def grid_start(
    model: BoxModel,
    curves: torch.Tensor,
    cfg: NlrConfig,
    soft: bool = False,
    log_prior: torch.Tensor | None = None,
    tmax_by_likelihood: bool = False,
) -> torch.Tensor:
    """Best (F, t_d, MTT) (V, 3) over the start grid, F by linear least squares per node.

    ``soft``: instead of the best node, the posterior mean over the nodes (likelihood of
    :func:`node_fit` times ``log_prior``'s probabilities, (K,) or per voxel (V, K), flat
    when None): the start then moves continuously with the data instead of jumping between
    nodes when noise (or rounding to whole HU) changes which node wins.
    ``tmax_by_likelihood`` (soft only): the start's Tmax is the best node's by likelihood
    alone, the prior settling only its split into MTT (the posterior mean) and delay (that
    Tmax - MTT/2); otherwise the posterior mean's.
    """
    nodes, shapes = start_nodes(model, cfg)
    flows, log_likelihood = node_fit(curves, shapes)
    if soft:
        prior = 0.0 if log_prior is None else log_prior.to(log_likelihood.dtype)
        weight = torch.softmax(log_likelihood + prior, dim=1)
        nodes = nodes.to(weight.dtype)
        delay, mtt = (weight @ nodes).T
        if tmax_by_likelihood:
            best = torch.argmax(log_likelihood, dim=1)
            delay = tmax_box(nodes[best, 0], nodes[best, 1]) - mtt / 2
        return torch.stack([(weight * flows).sum(1), delay, mtt], dim=-1)
    best = torch.argmax(log_likelihood, dim=1)
    return torch.stack([flows.gather(1, best[:, None])[:, 0], *nodes[best].T.to(flows.dtype)], -1)


def levenberg_marquardt(
    model: BoxModel, curves: torch.Tensor, theta: torch.Tensor, cfg: NlrConfig
) -> torch.Tensor:
    """Batched projected LM on (F, t_d, MTT) (V, 3); a step is kept only where it lowers the SSE."""
    lower = torch.tensor([0.0, cfg.delay_min_s, cfg.mtt_min_s], dtype=curves.dtype)
    upper = torch.tensor([torch.inf, cfg.delay_max_s, cfg.mtt_max_s], dtype=curves.dtype)
    damping = torch.full((len(curves),), 1e-2, dtype=curves.dtype)
    state = model.evaluate(theta[:, 1], theta[:, 2])  # (g, a_late, a_early) at theta
    r = theta[:, :1] * state[0] - curves
    cost = (r * r).sum(-1)
    for _ in range(cfg.iterations):
        jac = model.jacobian(theta[:, 0], *state)
        jtj = jac.transpose(1, 2) @ jac
        scale = torch.diagonal(jtj, dim1=1, dim2=2).clamp_min(1e-12)  # Marquardt's scaling
        lhs = jtj + damping[:, None, None] * torch.diag_embed(scale)
        step = torch.linalg.solve(lhs, -(jac.transpose(1, 2) @ r[..., None]))[..., 0]
        trial = torch.maximum(torch.minimum(theta + step, upper), lower)
        trial_state = model.evaluate(trial[:, 1], trial[:, 2])
        r_trial = trial[:, :1] * trial_state[0] - curves
        cost_trial = (r_trial * r_trial).sum(-1)
        better = cost_trial < cost
        keep = better[:, None]
        theta = torch.where(keep, trial, theta)
        state = tuple(
            torch.where(keep, new, old) for new, old in zip(trial_state, state, strict=True)
        )
        r = torch.where(keep, r_trial, r)
        cost = torch.where(better, cost_trial, cost)
        damping = torch.where(better, damping * 0.3, damping * 10.0).clamp(1e-9, 1e9)
    return theta


def nlr_maps(
    tissue_hu: np.ndarray,
    aif_hu: np.ndarray,
    frame_times_s: np.ndarray,
    mask: np.ndarray | None = None,
    cfg: NlrConfig | None = None,
) -> dict[str, np.ndarray]:
    """Box-model NLR maps of (..., T) tissue curves (ΔHU) given the AIF (T,) (ΔHU).

    Returns:
        {"cbf" ml/100g/min, "cbv" ml/100g, "mtt" s, "tmax" s (= delay + mtt/2), "delay" s}:
        float32 (...) arrays, 0 outside ``mask``.
    """
    cfg = cfg or NlrConfig()
    mask, curves = voxel_curves("NLR", tissue_hu, aif_hu, frame_times_s, mask)
    model = BoxModel(frame_times_s, aif_hu)
    params = np.zeros((len(curves), 3))
    with torch.no_grad():
        for s in range(0, len(curves), cfg.chunk):
            c = torch.as_tensor(curves[s : s + cfg.chunk])
            params[s : s + cfg.chunk] = levenberg_marquardt(
                model, c, grid_start(model, c, cfg), cfg
            ).numpy()
    cbf = flow_to_cbf(params[:, 0])
    values = {
        "cbf": cbf,
        "cbv": cbv_from_cbf_mtt(cbf, params[:, 2]),
        "mtt": params[:, 2],
        "tmax": tmax_box(params[:, 1], params[:, 2]),
        "delay": params[:, 1],
    }
    return voxel_maps(values, mask)


def fit_nlr(case: PreparedCase, cfg: NlrConfig | None = None) -> dict[str, np.ndarray]:
    """NLR maps of a prepared case (scan grid, 0 outside the brain); see :func:`nlr_maps`."""
    return nlr_maps(case.tissue_hu, case.aif_hu, case.frame_times_s, case.brain, cfg)
