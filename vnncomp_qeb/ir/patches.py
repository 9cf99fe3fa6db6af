"""Convolutions and poolings as sparse linear maps in patch form: the (in, out) matrix stores, for
each output, only the weights of its patch (K = C_in/groups · kh · kw entries), never a dense
matrix. Flat indices follow ONNX's NCHW order (a C-order flatten of (C, H, W))."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def conv_out(size: int, k: int, stride: int, pad_total: int, dilation: int) -> int:
    return (size + pad_total - dilation * (k - 1) - 1) // stride + 1


def same_pads(size: int, k: int, stride: int, dilation: int, upper: bool) -> tuple[int, int]:
    """ONNX auto_pad SAME_UPPER / SAME_LOWER: (begin, end) padding of one spatial axis."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (k - 1) * dilation + 1 - size, 0)
    small = total // 2
    return (small, total - small) if upper else (total - small, small)


def conv_matrix(kernel: np.ndarray, in_shape: tuple[int, int, int], strides=(1, 1), pads=(0, 0, 0, 0),
                dilations=(1, 1), groups: int = 1) -> tuple[sp.csc_array, tuple[int, int, int]]:
    """The 2-D convolution ``kernel`` (C_out, C_in/groups, kh, kw) over inputs of shape
    ``in_shape`` (C_in, H, W) as a sparse (C_in·H·W, C_out·H_out·W_out) matrix; ``pads`` are
    ONNX's (top, left, bottom, right). Returns the matrix and (C_out, H_out, W_out)."""
    Co, Cig, kh, kw = kernel.shape
    Ci, H, W = in_shape
    if Ci != Cig * groups or Co % groups:
        raise ValueError(f"kernel {list(kernel.shape)} with {groups} group(s) does not fit {Ci} input channels")
    (sh, sw), (dh, dw), (pt, pl, pb, pr) = strides, dilations, pads
    Ho, Wo = conv_out(H, kh, sh, pt + pb, dh), conv_out(W, kw, sw, pl + pr, dw)
    if Ho < 1 or Wo < 1:
        raise ValueError(f"a {kh}x{kw} kernel leaves no output on a {H}x{W} input")
    co, cg, ki, kj, ho, wo = np.meshgrid(np.arange(Co), np.arange(Cig), np.arange(kh), np.arange(kw),
                                         np.arange(Ho), np.arange(Wo), indexing="ij", sparse=True)
    ci = (co // (Co // groups)) * Cig + cg
    hi, wi = ho * sh - pt + ki * dh, wo * sw - pl + kj * dw
    ok = (hi >= 0) & (hi < H) & (wi >= 0) & (wi < W)
    full = np.broadcast_shapes(co.shape, cg.shape, ki.shape, kj.shape, ho.shape, wo.shape)
    ok = np.broadcast_to(ok, full)
    rows = np.broadcast_to(ci * H * W + hi * W + wi, full)[ok]
    cols = np.broadcast_to(co * Ho * Wo + ho * Wo + wo, full)[ok]
    vals = np.broadcast_to(np.asarray(kernel, dtype=np.float64)[:, :, :, :, None, None], full)[ok]
    return sp.csc_array((vals, (rows, cols)), shape=(Ci * H * W, Co * Ho * Wo)), (Co, Ho, Wo)


def average_pool_matrix(in_shape: tuple[int, int, int], kernel: tuple[int, int], strides=(1, 1),
                        pads=(0, 0, 0, 0), count_include_pad: bool = False):
    """Average pooling as a sparse matrix (a depthwise convolution with weights 1/count)."""
    C = in_shape[0]
    M, out = conv_matrix(np.ones((C, 1) + tuple(kernel)), in_shape, strides, pads, (1, 1), groups=C)
    count = np.full(M.shape[1], float(kernel[0] * kernel[1])) if count_include_pad else np.diff(M.indptr)
    return sp.csc_array(M @ sp.diags_array(1.0 / count)), out


def pool_windows(in_shape: tuple[int, int, int], kernel: tuple[int, int], strides=(1, 1), pads=(0, 0, 0, 0),
                 dilations=(1, 1)) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Flat input indices (outputs, K) of each pooling window, channel by channel; a window cut
    by the padding repeats its first valid element (a max is unchanged by a repeat)."""
    M, out = conv_matrix(np.ones((in_shape[0], 1) + tuple(kernel)), in_shape, strides, pads, dilations,
                         groups=in_shape[0])
    nnz = np.diff(M.indptr)
    K = kernel[0] * kernel[1]
    if nnz.min() < 1:
        raise ValueError("a pooling window lies entirely in the padding")
    k = np.minimum(np.arange(K)[None, :], nnz[:, None] - 1)
    return M.indices[M.indptr[:-1, None] + k], out


def selection(indices: np.ndarray, n_in: int) -> sp.csc_array:
    """The (n_in, n_out) 0/1 matrix picking input ``indices[j]`` for output ``j``."""
    n_out = indices.size
    return sp.csc_array((np.ones(n_out), (indices, np.arange(n_out))), shape=(n_in, n_out))


def patch_arrays(W) -> tuple[np.ndarray, np.ndarray]:
    """(input index, weight) per output and patch position, (out, K), from a sparse (in, out)
    map; short patches (at the padded border) are filled with weight 0 on their first input."""
    W = sp.csc_array(W)
    nnz = np.diff(W.indptr)
    K = max(int(nnz.max(initial=0)), 1)
    k = np.arange(K)[None, :]
    valid = k < nnz[:, None]
    pos = np.where(valid, W.indptr[:-1, None] + k, 0)
    if W.nnz == 0:
        return np.zeros(pos.shape, dtype=np.int64), np.zeros(pos.shape)
    pos = np.minimum(pos, W.nnz - 1)
    first = W.indices[np.minimum(W.indptr[:-1], W.nnz - 1)][:, None]
    return np.where(valid, W.indices[pos], first), np.where(valid, W.data[pos], 0.0)
