"""The (local) interaction basis (Bushnaq et al. 2024, "The Local Interaction Basis").

Per node layer, from the output backwards, with f~ = [f, 1] (bias folded in):
  G = E[f~^T f~] (optionally centred)  ->  whiten: R = S U D^-1/2, R+ = D^1/2 U^T S^-1
  M' = E[sum_out (d fhat_next/d f~)^T (...)]  (`interp.analysis.jacobians.jacobian_gram`)
  M = R+ M' R+^T = V Lambda V^T  ->  C = R V Lambda^1/2,  fhat = f~ C,  f~ = fhat C+
With centring, S shifts f to f - mean and the constant direction is kept apart as
basis column 0 (fhat_0 = 1); the other directions are ordered by Lambda. In the
basis the activations are uncorrelated with variances Lambda and the Jacobian
Gram of the next layer is the identity. All linear algebra is float64.

Baselines from the same Gram: PCA (`pca_basis`) and neurons (`neuron_basis`).
Models enter as a `Chain` (node names, step functions between them); see
`interp.analysis.interaction_models` for transformers and MLPs.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from interp.config import from_dict, write_atomic_text
from interp.analysis.jacobians import edge_matrix, jacobian_gram


@dataclass(frozen=True)
class LibConfig:
    center: bool = True
    sources: int = 16  # random +-1 sources per batch for the Jacobian Gram; 0 = exact
    ig_steps: int = 1  # integrated-gradient points on alpha * x (1 = plain gradient)
    whiten_threshold: float = 1e-9  # drop Gram eigenvalues below this fraction of the largest
    lambda_threshold: float = 1e-9  # drop interaction eigenvalues below this fraction of the largest
    final_basis: str = "identity"  # basis of the last node: "identity" (logits) or "pca"
    edges: bool = True
    seed: int = 0

    def __post_init__(self):
        if self.final_basis not in ("identity", "pca"):
            raise ValueError(f"final_basis must be 'identity' or 'pca', got {self.final_basis!r}.")


@dataclass
class Basis:
    """fhat = [f, 1] @ C  ([(d+1), n]); f = (fhat @ C_pinv)[:, :d]. Column 0 is the constant when `constant`."""

    kind: str
    C: torch.Tensor
    C_pinv: torch.Tensor
    eigenvalues: torch.Tensor  # [n]: Lambda (LIB), variance (PCA, neurons); entry 0 is the constant's
    constant: bool

    @property
    def d(self) -> int:
        return self.C.shape[0] - 1

    @property
    def n(self) -> int:
        """Directions other than the constant."""
        return self.C.shape[1] - int(self.constant) if self.C.dim() == 2 else 0

    def transform(self, f: torch.Tensor) -> torch.Tensor:
        return (_extend(f.double()) @ self.C).to(f.dtype)

    def inverse(self, fhat: torch.Tensor) -> torch.Tensor:
        return (fhat.double() @ self.C_pinv)[..., : self.d].to(fhat.dtype)

    def keep(self, f: torch.Tensor, n: int) -> torch.Tensor:
        """f with all but the top-n directions (and the constant) zeroed in the basis: mean ablation when centred."""
        fhat = _extend(f.double()) @ self.C
        fhat[..., int(self.constant) + n:] = 0
        return (fhat @ self.C_pinv)[..., : self.d].to(f.dtype)


@dataclass
class Chain:
    """A model as node layers: steps[k] maps node k [B, T, d_k] to node k+1; `first(batch)` gives node 0,
    `mask(batch, T)` the counted positions [B, T], `metrics(final, batch)` a dict of floats."""

    nodes: list[str]
    steps: list[Callable[[torch.Tensor], torch.Tensor]]
    first: Callable[[dict], torch.Tensor]
    mask: Callable[[dict, int], torch.Tensor]
    metrics: Callable[[torch.Tensor, dict], dict[str, float]]

    def node_values(self, batch: dict, upto: int) -> list[torch.Tensor]:
        xs = [self.first(batch)]
        with torch.no_grad():
            for step in self.steps[:upto]:
                xs.append(step(xs[-1]))
        return xs

    def run_from(self, k: int, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            for step in self.steps[k:]:
                x = step(x)
        return x


@dataclass
class LibResult:
    nodes: list[str]
    lib: dict[str, Basis]
    pca: dict[str, Basis]
    neuron: dict[str, Basis]
    edges: dict[str, torch.Tensor]  # "node_k->node_k+1": E [n_out, n_in]
    seconds: dict[str, float]
    cfg: LibConfig


def _extend(f: torch.Tensor) -> torch.Tensor:
    return torch.cat([f, torch.ones_like(f[..., :1])], dim=-1)


def gram(xs: list[torch.Tensor], masks: list[torch.Tensor]) -> torch.Tensor:
    """G = E[f~^T f~] [(d+1), (d+1)] float64 over counted positions; G[-1, :-1] is the mean."""
    G, count = 0.0, 0
    for x, m in zip(xs, masks):
        f = _extend(x[m].double())
        G, count = G + f.T @ f, count + len(f)
    return G / count


def _shift(mean: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """S with [f, 1] @ S = [f - mean, 1], and its inverse."""
    d = len(mean)
    S, S_inv = torch.eye(d + 1, dtype=torch.float64), torch.eye(d + 1, dtype=torch.float64)
    S[d, :d], S_inv[d, :d] = -mean, mean
    return S, S_inv


def _eigh_desc(A: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    vals, vecs = torch.linalg.eigh((A + A.T) / 2)
    vals, vecs = vals.flip(0), vecs.flip(1)
    keep = vals > threshold * vals[0].clamp_min(1e-300)
    return vals[keep], vecs[:, keep]


def whitening(G: torch.Tensor, center: bool, threshold: float = 1e-9) -> tuple[torch.Tensor, torch.Tensor]:
    """R [(d+1), r], R+ [r, (d+1)] with R^T G R = I; when centring, column 0 is the constant direction."""
    d = G.shape[0] - 1
    if not center:
        D, U = _eigh_desc(G, threshold)
        return U / D.sqrt(), D.sqrt()[:, None] * U.T
    mean = G[d, :d]
    D, U = _eigh_desc(G[:d, :d] - torch.outer(mean, mean), threshold)
    S, S_inv = _shift(mean)
    W = torch.zeros(d + 1, len(D) + 1, dtype=torch.float64)
    W[d, 0], W[:d, 1:] = 1.0, U / D.sqrt()
    W_pinv = torch.zeros(len(D) + 1, d + 1, dtype=torch.float64)
    W_pinv[0, d], W_pinv[1:, :d] = 1.0, D.sqrt()[:, None] * U.T
    return S @ W, W_pinv @ S_inv


def interaction_basis(G: torch.Tensor, M_prime: torch.Tensor, cfg: LibConfig) -> Basis:
    """The LIB basis of a node layer from its Gram G and Jacobian Gram M' (both [(d+1), (d+1)])."""
    R, R_pinv = whitening(G, cfg.center, cfg.whiten_threshold)
    M = R_pinv @ M_prime.double() @ R_pinv.T
    c = int(cfg.center)  # the constant direction (index 0 when centred) is kept apart
    lam, V = _eigh_desc(M[c:, c:], cfg.lambda_threshold)
    C = R[:, c:] @ V * lam.sqrt()
    C_pinv = (V.T / lam.sqrt()[:, None]) @ R_pinv[c:]
    if c:
        C, C_pinv, lam = torch.cat([R[:, :1], C], 1), torch.cat([R_pinv[:1], C_pinv]), torch.cat([M[:1, 0], lam])
    return Basis("lib", C, C_pinv, lam, bool(c))


def _variance_basis(G: torch.Tensor, U: torch.Tensor, var: torch.Tensor, kind: str) -> Basis:
    d = G.shape[0] - 1
    S, S_inv = _shift(G[d, :d])
    W = torch.zeros(d + 1, U.shape[1] + 1, dtype=torch.float64)
    W[d, 0], W[:d, 1:] = 1.0, U
    return Basis(kind, S @ W, W.T @ S_inv, torch.cat([torch.ones(1, dtype=torch.float64), var]), True)


def pca_basis(G: torch.Tensor, threshold: float = 1e-12) -> Basis:
    """Principal components of the centred activations (column 0: the constant/mean)."""
    d = G.shape[0] - 1
    var, U = _eigh_desc(G[:d, :d] - torch.outer(G[d, :d], G[d, :d]), threshold)
    return _variance_basis(G, U, var, "pca")


def neuron_basis(G: torch.Tensor) -> Basis:
    """The coordinate axes (centred), ordered by variance."""
    d = G.shape[0] - 1
    var = (G[:d, :d].diagonal() - G[d, :d] ** 2).clamp_min(0)
    order = var.argsort(descending=True)
    return _variance_basis(G, torch.eye(d, dtype=torch.float64)[:, order], var[order], "neuron")


IDENTITY_DENSE_MAX = 4096  # above this the last node's identity basis is not materialised (LM logits)


def identity_basis(d: int) -> Basis:
    """fhat = f. For d > IDENTITY_DENSE_MAX, C and C_pinv are empty placeholders (no edges into it)."""
    if d > IDENTITY_DENSE_MAX:
        empty = torch.zeros(0, dtype=torch.float64)
        return Basis("identity", empty, empty, empty, False)
    C = torch.cat([torch.eye(d, dtype=torch.float64), torch.zeros(1, d, dtype=torch.float64)])
    return Basis("identity", C, C.T.clone(), torch.ones(d, dtype=torch.float64), False)


def build_lib(chain: Chain, batches: list[dict], cfg: LibConfig = LibConfig(), progress: bool = True) -> LibResult:
    """Bases at every node (LIB, PCA, neurons; the last node identity or PCA) and LIB edges between neighbours."""
    K = len(chain.nodes) - 1
    start = time.perf_counter()
    upto = K if cfg.final_basis == "pca" else K - 1
    values = [chain.node_values(b, upto) for b in batches]
    grams = [gram([v[k] for v in values], [chain.mask(b, v[k].shape[1]) for b, v in zip(batches, values)])
             for k in range(upto + 1)]
    seconds = {"activations": time.perf_counter() - start}
    lib, pca, neuron = {}, {}, {}
    last = chain.nodes[K]
    if cfg.final_basis == "pca":
        lib[last] = pca[last] = pca_basis(grams[K])
        neuron[last] = neuron_basis(grams[K])
    else:
        d_out = chain.steps[-1](values[0][K - 1][:1]).shape[-1]
        lib[last] = pca[last] = neuron[last] = identity_basis(d_out)

    def triples(k):
        return [(v[k], chain.mask(b, v[k].shape[1]), chain.mask(b, chain.steps[k](v[k][:1]).shape[1]).expand(len(v[k]), -1))
                for b, v in zip(batches, values)]

    for k in tqdm(range(K - 1, -1, -1), desc="LIB nodes", disable=not progress):
        t0, node = time.perf_counter(), chain.nodes[k]
        nxt = lib[chain.nodes[k + 1]]
        M_prime = jacobian_gram(chain.steps[k], triples(k), None if nxt.C.numel() == 0 else nxt.C, cfg.sources, cfg.ig_steps, cfg.seed + k)
        lib[node], pca[node], neuron[node] = interaction_basis(grams[k], M_prime, cfg), pca_basis(grams[k]), neuron_basis(grams[k])
        seconds[node] = time.perf_counter() - t0
    edges = {}
    if cfg.edges:
        for k in tqdm(range(K), desc="LIB edges", disable=not progress):
            t0, a, b = time.perf_counter(), lib[chain.nodes[k]], lib[chain.nodes[k + 1]]
            if b.C.numel() == 0:
                continue
            edges[f"{chain.nodes[k]}->{chain.nodes[k + 1]}"] = edge_matrix(chain.steps[k], triples(k), a.C, a.C_pinv, b.C, cfg.ig_steps)
            seconds[f"edges {chain.nodes[k]}"] = time.perf_counter() - t0
    seconds["total"] = time.perf_counter() - start
    return LibResult(list(chain.nodes), lib, pca, neuron, edges, seconds, cfg)


# ---- ablation curves ---------------------------------------------------------------------------------------

def direction_curve(chain: Chain, k: int, basis: Basis, batches: list[dict], ns: list[int]) -> list[dict]:
    """Metrics with only the top-n directions of `basis` kept at node k (the rest mean-ablated), for each n."""
    values = [chain.node_values(b, k)[k] for b in batches]
    rows = []
    for n in ns:
        parts = []
        for b, x in zip(batches, values):
            m = chain.mask(b, x.shape[1])[..., None]
            parts.append(chain.metrics(chain.run_from(k, torch.where(m, basis.keep(x, n), x)), b))
        rows.append({"n": n, **_mean(parts)})
    return rows


def edge_curve(chain: Chain, k: int, result: LibResult, batches: list[dict], ns: list[int], chunk_rows: int = 32) -> list[dict]:
    """Metrics with only the n strongest LIB edges from node k to k+1 kept, for each n.

    Each next-layer direction i is recomputed from node k with the inputs it has no kept edge from
    set to zero in the LIB basis (mean ablation; the constant too when its edge is cut)."""
    a, b = result.lib[chain.nodes[k]], result.lib[chain.nodes[k + 1]]
    E = result.edges[f"{chain.nodes[k]}->{chain.nodes[k + 1]}"]
    order = E.flatten().argsort(descending=True)
    values = [chain.node_values(bt, k)[k] for bt in batches]
    rows = []
    for n in ns:
        keep = torch.zeros(E.numel(), dtype=torch.float64)
        keep[order[:n]] = 1
        keep = keep.reshape(E.shape)  # [n_out, n_in]
        parts = []
        for bt, x in zip(batches, values):
            fh = _extend(x.double()) @ a.C  # [B, T, n_in]
            out = []
            with torch.no_grad():
                for rows_i in torch.arange(E.shape[0]).split(chunk_rows):
                    xs = ((fh[None] * keep[rows_i, None, None, :]) @ a.C_pinv)[..., : a.d].to(x.dtype)  # [r, B, T, d]
                    y = chain.steps[k](xs.flatten(0, 1)).unflatten(0, (len(rows_i), x.shape[0]))
                    out.append(torch.einsum("rbtd,dr->btr", _extend(y.double()), b.C[:, rows_i]))
            y_next = b.inverse(torch.cat(out, -1)).to(x.dtype)
            parts.append(chain.metrics(chain.run_from(k + 1, y_next), bt))
        rows.append({"n": n, **_mean(parts)})
    return rows


def smallest_n(curve: list[dict], ok: Callable[[dict], bool]) -> int | None:
    """The smallest n from which every larger n on the curve satisfies `ok` (None if the largest fails)."""
    best = None
    for row in sorted(curve, key=lambda r: -r["n"]):
        if not ok(row):
            break
        best = row["n"]
    return best


def grid(n_max: int, points: int = 24) -> list[int]:
    """About `points` integers from 1 to n_max, spaced geometrically (always including n_max)."""
    if n_max < 1:
        return [0]
    return sorted({max(1, round(n_max ** (i / (points - 1)))) for i in range(points)} | {n_max})


def ablation_summary(chain: Chain, result: LibResult, batches: list[dict], points: int = 24, kinds: tuple[str, ...] = ("lib", "pca"),
                     acc_fraction: float = 0.95, loss_tolerance: float = 1e-3, edges: bool = True) -> dict:
    """Direction curves per node and kind, edge curves per pair, and the smallest n keeping accuracy >=
    acc_fraction x clean accuracy (directions) or loss <= clean loss + loss_tolerance (edges)."""
    clean = _mean([chain.metrics(chain.run_from(0, chain.first(b)), b) for b in batches])
    out = {"clean": clean, "directions": {}, "edges": {}}
    for k, node in enumerate(tqdm(chain.nodes[:-1], desc="ablations")):
        out["directions"][node] = {}
        for kind in kinds:
            basis = getattr(result, kind)[node]
            curve = direction_curve(chain, k, basis, batches, grid(basis.n, points))
            out["directions"][node][kind] = {
                "curve": curve, "dims": basis.n,
                "n_for_accuracy": smallest_n(curve, lambda r: r["accuracy"] >= acc_fraction * clean["accuracy"]),
                "n_for_loss": smallest_n(curve, lambda r: r["loss"] <= clean["loss"] + loss_tolerance)}
        name = f"{node}->{chain.nodes[k + 1]}"
        if edges and name in result.edges:
            curve = edge_curve(chain, k, result, batches, grid(result.edges[name].numel(), points))
            out["edges"][name] = {"curve": curve, "total": result.edges[name].numel(),
                                  "n_for_loss": smallest_n(curve, lambda r: r["loss"] <= clean["loss"] + loss_tolerance)}
    return out


def _mean(parts: list[dict]) -> dict:
    return {key: sum(p[key] for p in parts) / len(parts) for key in parts[0]}


# ---- saving ------------------------------------------------------------------------------------------------

def save_result(result: LibResult, folder: str | Path) -> Path:
    """bases.safetensors (C, C_pinv, eigenvalues per node and kind; edges) + lib.json (nodes, config, timings)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors, meta = {}, {}
    for kind in ("lib", "pca", "neuron"):
        for node, basis in getattr(result, kind).items():
            for field in ("C", "C_pinv", "eigenvalues"):
                tensors[f"{kind}/{node}/{field}"] = getattr(basis, field).clone().contiguous()
            meta[f"{kind}/{node}"] = {"kind": basis.kind, "constant": basis.constant}
    for name, E in result.edges.items():
        tensors[f"edges/{name}"] = E.clone().contiguous()
    save_file(tensors, str(folder / "bases.safetensors"))
    info = {"nodes": result.nodes, "bases": meta, "edges": list(result.edges), "seconds": result.seconds,
            "cfg": dataclasses.asdict(result.cfg)}
    write_atomic_text(folder / "lib.json", json.dumps(info, indent=2))
    return folder


def load_result(folder: str | Path) -> LibResult:
    folder = Path(folder)
    if not (folder / "lib.json").exists():
        raise FileNotFoundError(f"{folder}/lib.json not found: expected a folder written by save_result / `interp lib`.")
    info = json.loads((folder / "lib.json").read_text())
    t = load_file(str(folder / "bases.safetensors"))
    kinds = {"lib": {}, "pca": {}, "neuron": {}}
    for key, m in info["bases"].items():
        kind, node = key.split("/", 1)
        kinds[kind][node] = Basis(m["kind"], t[f"{key}/C"], t[f"{key}/C_pinv"], t[f"{key}/eigenvalues"], m["constant"])
    edges = {name: t[f"edges/{name}"] for name in info["edges"]}
    return LibResult(info["nodes"], kinds["lib"], kinds["pca"], kinds["neuron"], edges, info["seconds"],
                     from_dict(LibConfig, info["cfg"], source=str(folder / "lib.json")))
