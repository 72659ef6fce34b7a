"""The blockwise LMI against a dense construction from stacked matrices, in numpy and torch."""

import numpy as np
import pytest
import torch

from certopt.sdp.lmi import assemble_numpy, eliminate, lmi_blocks
from certopt.sdp.program import LinearExpr, ProgramBuilder, SlopeRestricted
from certopt.sdp.verify import bound_from_weight, lmi_matrix


def _program_with_skips(rng):
    """x -> φ1 = act(W0 x) -> φ2 = act(W1 φ1 + U x) -> f = W2 φ2 + V φ1 (skips included)."""
    builder = ProgramBuilder((4,))
    w0, w1, u = rng.normal(size=(5, 4)), rng.normal(size=(3, 5)), rng.normal(size=(3, 4))
    w2, v = rng.normal(size=(2, 3)), rng.normal(size=(2, 5))
    phi1 = builder.add_stage(builder.input.left_multiply(w0),
                             SlopeRestricted(rng.uniform(-1, 0, 5), rng.uniform(0.5, 1, 5)))
    pre2 = phi1.left_multiply(w1) + builder.input.left_multiply(u)
    phi2 = builder.add_stage(pre2, SlopeRestricted(0.1, 1.0, 3))
    return builder.finish(phi2.left_multiply(w2) + phi1.left_multiply(v))


def _dense_lmi(program, gamma, multipliers):
    """M = E0ᵀdiag(γ)E0 − AᵀA − Σ_s [C_s; E_s]ᵀ S_s [C_s; E_s] with full stacked matrices."""
    sizes = program.segment_sizes
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    n = offsets[-1]

    def full(expr):
        out = np.zeros((expr.dim, n))
        for k, block in expr.terms.items():
            out[:, offsets[k]:offsets[k + 1]] = block
        return out

    matrix = np.zeros((n, n))
    matrix[:sizes[0], :sizes[0]] = np.diag(gamma)
    a = full(program.output)
    matrix -= a.T @ a
    for s, (stage, mult) in enumerate(zip(program.stages, multipliers)):
        c = full(stage.pre)
        e = full(LinearExpr.identity(s + 1, (sizes[s + 1],)))
        t, alpha, beta = mult["t"], stage.qc.alpha, stage.qc.beta
        qc = np.block([[np.diag(-alpha * beta * t), np.diag((alpha + beta) * t / 2)],
                       [np.diag((alpha + beta) * t / 2), np.diag(-t)]])
        ce = np.vstack([c, e])
        matrix -= ce.T @ qc @ ce
    return matrix


def test_blockwise_lmi_equals_dense_construction():
    rng = np.random.default_rng(0)
    program = _program_with_skips(rng)
    gamma = rng.uniform(0.5, 2.0, 4)
    multipliers = [{"t": rng.uniform(0, 1, st.qc.size)} for st in program.stages]
    expected = _dense_lmi(program, gamma, multipliers)
    np.testing.assert_allclose(lmi_matrix(program, gamma, multipliers), expected, atol=1e-12)

    as_torch = {k: torch.as_tensor(v) for k, v in
                lmi_blocks(program, torch.as_tensor(gamma),
                           [{"t": torch.as_tensor(m["t"])} for m in multipliers],
                           convert=torch.as_tensor).items()}
    dense_torch = assemble_numpy(program, {k: v.numpy() for k, v in as_torch.items()})
    np.testing.assert_allclose(dense_torch, expected, atol=1e-12)


def test_bound_from_weight():
    assert bound_from_weight(np.array([1.0, 4.0]), "2") == pytest.approx(2.0)
    assert bound_from_weight(np.array([1.0, 3.0]), "inf") == pytest.approx(2.0)
    assert bound_from_weight(np.array([np.nan]), "2") == np.inf


def test_refilled_buffer_and_segment_elimination_match_the_dense_matrix():
    rng = np.random.default_rng(1)
    program = _program_with_skips(rng)
    n0 = program.input_dim
    buffer = None
    for _ in range(2):  # the second call refills the first call's matrix in place
        gamma = rng.uniform(5.0, 9.0, n0)
        multipliers = [{"t": rng.uniform(0.5, 1, st.qc.size)} for st in program.stages]
        expected = _dense_lmi(program, gamma, multipliers)
        buffer = assemble_numpy(program, lmi_blocks(program, gamma, multipliers), buffer)
        np.testing.assert_allclose(buffer, expected, atol=1e-12)
    # eliminating the activation segments (skips included) leaves the input's Schur complement;
    # it fails on the indefinite activation block of the multipliers above
    assert np.linalg.eigvalsh(expected[n0:, n0:])[0] < 0
    blocks = lmi_blocks(program, gamma, multipliers)
    assert not all(eliminate(blocks, segment) for segment in (2, 1))
    multipliers = [{"t": rng.uniform(40, 50, 5)}, {"t": rng.uniform(2, 3, 3)}]
    expected = _dense_lmi(program, gamma, multipliers)
    rest, cross = expected[n0:, n0:], expected[:n0, n0:]
    assert np.linalg.eigvalsh(rest)[0] > 0
    blocks = lmi_blocks(program, gamma, multipliers)
    assert eliminate(blocks, 2) and eliminate(blocks, 1) and list(blocks) == [(0, 0)]
    np.testing.assert_allclose(blocks[(0, 0)], expected[:n0, :n0]
                               - cross @ np.linalg.solve(rest, cross.T), atol=1e-10)
