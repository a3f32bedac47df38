"""Dark matter: what an SAE's error is made of (Engels, Riggs & Tegmark, "Decomposing
The Dark Matter of Sparse Autoencoders", 2024).

For activations x [n, d] and a reconstruction SAE(x), the error e = x - SAE(x)
splits into a linear part a^T x (the least-squares prediction of e from x, fit
on one set of tokens and scored on another) and a nonlinear part
e - a^T x, so x = SAE(x) + a^T x + nonlinear error. One public function per
question, each returning plain data (floats, dicts, tensors); figures live in
`interp.viz.darkmatter`.

A "reconstruct" argument is anything mapping [n, d] -> [n, d]: a `Dictionary`
(its forward pass), or `pursuit(sae)` (gradient pursuit with its decoder).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from interp.data.tokens import token_mask
from interp.dictionary import Dictionary
from interp.hooks import replace_hooks
from interp.model import hook_layer, validate_hook
from interp.analysis.regression import R2, LinearFit, StreamingLstsq, r2_score

Reconstruct = Callable[[torch.Tensor], torch.Tensor]
CHUNK = 4096  # rows per batch when a function streams over an in-memory tensor


@dataclass
class Rows:
    """Non-BOS positions of some contexts: activations and what is known about each token.

    x [n, d] at the analysed hook; token [n] ids; loss [n] the clean model's
    cross-entropy on that token (-log p(token | previous tokens)), or None;
    extra {hook: [n, d']} activations at other hooks (e.g. the previous layer).
    """

    x: torch.Tensor
    token: torch.Tensor
    loss: torch.Tensor | None = None
    extra: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.x)


@torch.no_grad()
def collect(model, hook: str, tokens: torch.Tensor, extra_hooks: Iterable[str] = (), with_loss: bool = True,
            batch_size: int = 8) -> Rows:
    """Run `tokens` [contexts, n_ctx] through the model; keep every non-BOS position.

    with_loss=False stops the forward pass after the last hook needed (much cheaper).
    """
    hooks = [validate_hook(model, h) for h in (hook, *extra_hooks)]
    stop = None if with_loss else max(hook_layer(h) for h in hooks) + 1
    out: dict[str, list] = {h: [] for h in hooks} | {"token": [], "loss": []}
    for chunk in tqdm(tokens.split(batch_size), desc="collect", unit="batch", leave=False):
        chunk = chunk.to(model.cfg.device)
        logits, cache = model.run_with_cache(chunk, names_filter=hooks, stop_at_layer=stop)
        mask = token_mask(model, chunk)
        for h in hooks:
            out[h].append(cache[h].reshape(*mask.shape, -1)[mask].float().cpu())
        out["token"].append(chunk[mask].cpu())
        if with_loss:
            logp = logits[:, :-1].double().log_softmax(-1).gather(-1, chunk[:, 1:, None])[..., 0]
            loss = torch.cat([torch.full_like(logp[:, :1], float("nan")), -logp], dim=1)  # position 0 has no loss
            out["loss"].append(loss[mask].float().cpu())
    cat = {k: torch.cat(v) if v else None for k, v in out.items()}
    return Rows(cat[hook], cat["token"], cat["loss"], {h: cat[h] for h in hooks[1:]})


def chunks(x: torch.Tensor, size: int = CHUNK) -> list[torch.Tensor]:
    return list(x.split(size))


@torch.no_grad()
def error_of(reconstruct: Reconstruct, x: torch.Tensor) -> torch.Tensor:
    """e = x - reconstruct(x), [n, d] in x's dtype."""
    dtype = reconstruct.W_dec.dtype if isinstance(reconstruct, Dictionary) else x.dtype
    return x - reconstruct(x.to(dtype)).to(x.dtype)


# --- the linear / nonlinear split --------------------------------------------------
def fit_linear_error(reconstruct: Reconstruct, batches: Iterable[torch.Tensor], intercept: bool = False,
                     ridge: float = 0.0) -> LinearFit:
    """Least-squares a [d, d] (and b with `intercept`) with e ~ x a + b, streamed over x batches [n, d]."""
    acc = None
    for x in tqdm(batches, desc="fit linear error", unit="batch", leave=False):
        acc = acc or StreamingLstsq(x.shape[1], x.shape[1], intercept)
        acc.update(x, error_of(reconstruct, x))
    if acc is None:
        raise ValueError("fit_linear_error got no batches of activations.")
    return acc.solve(ridge)


@torch.no_grad()
def components(reconstruct: Reconstruct, fit: LinearFit, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """x = recon + linear + nonlinear; every value [n, d] in x's dtype (also 'error' = linear + nonlinear)."""
    error = error_of(reconstruct, x)
    linear = fit.predict(x.double()).to(x.dtype)
    return {"recon": x - error, "error": error, "linear": linear, "nonlinear": error - linear}


@torch.no_grad()
def score_linear_error(reconstruct: Reconstruct, fit: LinearFit, batches: Iterable[torch.Tensor]) -> dict[str, float]:
    """How much of the error the linear part explains, on held-out batches.

    error_r2           fraction of the total error variance explained by a^T x
    error_r2_mean_dim  mean over dimensions of the per-dimension R^2
    linear_share       sum ||a^T x||^2 / sum ||e||^2 (share of the error's squared norm predicted)
    fvu, fvu_nonlinear sum ||e||^2 and sum ||nonlinear||^2 over the total variance of x
    """
    r2, n = R2(), 0
    sums = dict.fromkeys(["e", "lin", "nl", "x", "x_sum"], 0.0)
    for x in tqdm(batches, desc="score", unit="batch", leave=False):
        c = components(reconstruct, fit, x)
        r2.update(c["error"], c["linear"])
        sums["e"] += c["error"].double().pow(2).sum().item()
        sums["lin"] += c["linear"].double().pow(2).sum().item()
        sums["nl"] += c["nonlinear"].double().pow(2).sum().item()
        sums["x"] += x.double().pow(2).sum().item()
        sums["x_sum"] = sums["x_sum"] + x.double().sum(0)
        n += len(x)
    var_x = sums["x"] - sums["x_sum"].pow(2).sum().item() / n
    return {"tokens": n, "fvu": sums["e"] / var_x, "fvu_nonlinear": sums["nl"] / var_x,
            "error_r2": r2.total(), "error_r2_mean_dim": r2.mean_per_dim(),
            "linear_share": sums["lin"] / sums["e"], "nonlinear_share": sums["nl"] / sums["e"]}


@torch.no_grad()
def token_norms(reconstruct: Reconstruct, fit: LinearFit, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per token [n]: squared norms of the error, its linear and nonlinear parts, and the L0 of a dictionary."""
    out: dict[str, list] = {"error": [], "linear": [], "nonlinear": [], "l0": []}
    for xb in chunks(x):
        c = components(reconstruct, fit, xb)
        for key in ("error", "linear", "nonlinear"):
            out[key].append(c[key].double().pow(2).sum(-1))
        if isinstance(reconstruct, Dictionary):
            out["l0"].append((reconstruct.encode(xb.to(reconstruct.W_dec.dtype)) != 0).sum(-1).double())
    return {k: torch.cat(v) for k, v in out.items() if v}


# --- predicting the error norm per token -------------------------------------------
def _linear_predict(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, ridge: float = 0.0) -> torch.Tensor:
    """Fit y ~ x (with intercept) on train, predict on test; x [n, p] or [n]."""
    train_x, test_x = train_x.reshape(len(train_x), -1), test_x.reshape(len(test_x), -1)
    acc = StreamingLstsq(train_x.shape[1], 1, intercept=True)
    for xb, yb in zip(chunks(train_x), chunks(train_y)):
        acc.update(xb, yb)
    return acc.solve(ridge).predict(test_x.double())[:, 0]


def token_mean_predict(train_token: torch.Tensor, train_y: torch.Tensor, test_token: torch.Tensor) -> torch.Tensor:
    """The mean of y per token id on train (the overall mean for ids never seen)."""
    size = int(max(train_token.max(), test_token.max())) + 1
    total = torch.zeros(size, dtype=torch.float64).index_add_(0, train_token, train_y.double())
    count = torch.zeros(size, dtype=torch.float64).index_add_(0, train_token, torch.ones_like(train_y, dtype=torch.float64))
    means = torch.where(count > 0, total / count.clamp_min(1), train_y.double().mean())
    return means[test_token]


def norm_prediction(sae: Dictionary, fit: LinearFit, train: Rows, test: Rows, ridge: float = 0.0) -> dict:
    """Held-out R^2 of predicting ||e||^2 and ||e|| per token from x (linear) and from the baselines.

    Baselines: token identity (mean per token id), the model's loss on the token,
    the SAE's L0, and ||x||, each by linear regression with an intercept.
    Returns {"rows": [{target, predictor, r2}], "actual": ||e||^2 [n_test],
    "predicted": its prediction from x [n_test]}.
    """
    norms, feats = {}, {}
    for split, r in (("train", train), ("test", test)):
        norms[split] = token_norms(sae, fit, r.x)
        feats[split] = {"x (linear)": r.x, "loss": r.loss, "L0": norms[split]["l0"], "||x||": r.x.double().norm(dim=-1)}
    names = [n for n in feats["train"] if feats["train"][n] is not None and feats["test"][n] is not None]
    rows, predicted = [], None
    for target, power in (("||e||^2", 1.0), ("||e||", 0.5)):
        y_train, y_test = norms["train"]["error"] ** power, norms["test"]["error"] ** power
        preds = {"token identity": token_mean_predict(train.token, y_train, test.token)}
        for name in names:
            preds[name] = _linear_predict(feats["train"][name], y_train, feats["test"][name], ridge if name == "x (linear)" else 0.0)
        rows += [{"target": target, "predictor": name, "r2": r2_score(y_test, pred)} for name, pred in preds.items()]
        predicted = preds["x (linear)"] if power == 1.0 else predicted
    return {"rows": rows, "actual": norms["test"]["error"], "predicted": predicted}


# --- per-token scaling across widths ------------------------------------------------
def scaling(saes: dict[str, Dictionary], fits: dict[str, LinearFit], train: Rows, test: Rows) -> dict:
    """Do larger SAEs fail on the same tokens? (squared error norms, held-out R^2)

    r2[i][j]: R^2 of predicting SAE j's ||e||^2 from SAE i's by linear regression;
    rows: for each smaller i and larger j, the R^2 from ||e_i||^2 alone and with
    ||nonlinear_i||^2 added, and the difference. SAEs are ordered by width.
    """
    names = sorted(saes, key=lambda n: saes[n].d_dict)
    norms = {split: {n: token_norms(saes[n], fits[n], rows.x) for n in names} for split, rows in (("train", train), ("test", test))}
    r2 = [[r2_score(norms["test"][j]["error"], _linear_predict(norms["train"][i]["error"], norms["train"][j]["error"],
                                                               norms["test"][i]["error"]))
           for j in names] for i in names]
    rows = []
    for a, small in enumerate(names):
        for large in names[a + 1:]:
            both = {s: torch.stack([norms[s][small]["error"], norms[s][small]["nonlinear"]], 1) for s in ("train", "test")}
            with_nl = r2_score(norms["test"][large]["error"], _linear_predict(both["train"], norms["train"][large]["error"], both["test"]))
            alone = r2[a][names.index(large)]
            rows.append({"smaller": small, "larger": large, "r2_error_norm": alone, "r2_with_nonlinear_norm": with_nl,
                         "added_by_nonlinear": with_nl - alone})
    return {"names": names, "r2": r2, "rows": rows}


# --- downstream loss ----------------------------------------------------------------
SPLICES = {
    "clean (x)": None,  # no hook
    "SAE(x)": lambda c: c["recon"],
    "SAE(x) + linear error": lambda c: c["recon"] + c["linear"],
    "SAE(x) + nonlinear error": lambda c: c["recon"] + c["nonlinear"],
}


@torch.no_grad()
def ce_table(model, reconstruct: Reconstruct, fit: LinearFit, hook: str, tokens: torch.Tensor, batch_size: int = 8) -> list[dict]:
    """Mean next-token CE with x replaced at `hook` (non-BOS positions) by each entry of SPLICES.

    Each row also gives the increase over clean and that increase as a share of SAE(x)'s.
    """
    total, count = dict.fromkeys(SPLICES, 0.0), 0
    for chunk in tqdm(tokens.split(batch_size), desc="ce", unit="batch", leave=False):
        chunk = chunk.to(model.cfg.device)
        mask = token_mask(model, chunk)
        keep = token_mask(model, chunk[:, 1:])
        targets = chunk[:, 1:][keep]
        for name, pick in SPLICES.items():
            def value(act, pick=pick):
                flat = act.reshape(-1, act.shape[-1])
                return pick(components(reconstruct, fit, flat.float())).to(act.dtype).reshape(act.shape)

            logits = model.run_with_hooks(chunk, fwd_hooks=replace_hooks(hook, value, mask) if pick else [])
            logp = logits[:, :-1][keep].double().log_softmax(-1)
            total[name] += -logp.gather(-1, targets[:, None]).sum().item()
        count += len(targets)
    ce = {k: v / count for k, v in total.items()}
    base, sae_gap = ce["clean (x)"], ce["SAE(x)"] - ce["clean (x)"]
    return [{"splice": k, "ce": v, "increase": v - base, "share_of_sae_increase": (v - base) / sae_gap if sae_gap else float("nan")}
            for k, v in ce.items()]


# --- reducing the nonlinear error ----------------------------------------------------
@torch.no_grad()
def gradient_pursuit(sae: Dictionary, x: torch.Tensor, l0: torch.Tensor | None = None) -> torch.Tensor:
    """Codes [n, d_dict] from gradient pursuit (Blumensath & Davies 2008) over the SAE's decoder.

    Each step adds the atom with the largest inner product with the residual to
    the support, takes an exact line-search step along the gradient restricted
    to the support, and clips codes at zero. Row i takes l0[i] steps (default:
    the SAE's own L0 on that token), so its L0 is at most the SAE's.
    """
    x = x.to(sae.W_dec.dtype)
    if l0 is None:
        l0 = (sae.encode(x) != 0).sum(-1)
    norms = sae.W_dec.norm(dim=1).clamp_min(1e-12)
    atoms = sae.W_dec / norms[:, None]  # [d_dict, d]
    target = x - sae.b_dec
    w = torch.zeros(len(x), sae.d_dict, dtype=x.dtype, device=x.device)
    rows = torch.arange(len(x), device=x.device)
    for step in range(int(l0.max()) if len(x) else 0):
        live = (l0 > step)[:, None]
        resid = target - w @ atoms
        inner = resid @ atoms.T
        support = w != 0
        support[rows, inner.argmax(-1)] = True
        grad = inner * support
        c = grad @ atoms
        size = (c * resid).sum(-1, keepdim=True) / (c * c).sum(-1, keepdim=True).clamp_min(1e-30)
        w = torch.where(live, torch.relu(w + size * grad), w)
    return w / norms


def pursuit(sae: Dictionary) -> Reconstruct:
    """A reconstruct function: the SAE's decoder applied to gradient-pursuit codes at the SAE's own L0."""
    def reconstruct(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([sae.decode(gradient_pursuit(sae, xb)) for xb in chunks(x, 1024)]) if len(x) else x
    return reconstruct


def explain_nonlinear(reconstruct: Reconstruct, fit: LinearFit, train_x: torch.Tensor, train_z: torch.Tensor,
                      test_x: torch.Tensor, test_z: torch.Tensor, ridge: float = 0.0, with_x: bool = True) -> dict[str, float]:
    """How much of the nonlinear error a linear map from other features z [n, p] removes (held out).

    z is e.g. the previous layer's SAE reconstruction, optionally concatenated
    with this layer's attention/MLP SAE outputs. With `with_x` the map reads
    [x, z] (with intercept), so it can use what z knows beyond x; z alone is
    mostly collinear with x, to which the nonlinear error is orthogonal.
    Returns the R^2 and the fraction of sum ||nonlinear||^2 removed.
    """
    nl = {s: torch.cat([components(reconstruct, fit, xb)["nonlinear"] for xb in chunks(x)]) for s, x in (("train", train_x), ("test", test_x))}
    if with_x:
        train_z, test_z = torch.cat([train_x, train_z], 1), torch.cat([test_x, test_z], 1)
    acc = StreamingLstsq(train_z.shape[1], nl["train"].shape[1], intercept=True)
    for zb, yb in zip(chunks(train_z), chunks(nl["train"])):
        acc.update(zb, yb)
    pred = acc.solve(ridge).predict(test_z.double()).to(nl["test"].dtype)
    left = (nl["test"] - pred).double().pow(2).sum().item()
    return {"nonlinear_r2": r2_score(nl["test"], pred), "nonlinear_norm_removed": 1 - left / nl["test"].double().pow(2).sum().item()}


# --- SAEs trained on each component ---------------------------------------------------
def train_on_components(make: Callable[[], Dictionary], train: dict[str, torch.Tensor], test: dict[str, torch.Tensor],
                        cfg, batch_size: int = 1024) -> tuple[list[dict], dict[str, Dictionary]]:
    """Train one fresh dictionary (from `make()`) per component (e.g. linear / nonlinear error) and compare FVU.

    Rows are normalised to mean norm sqrt(d) for training, as `interp.training.loop`
    does; the returned dictionaries act on raw rows. Returns rows
    {component, fvu, l0} measured on `test`, and the dictionaries.
    """
    from interp.training.loop import Trainee

    rows, trained = [], {}
    for name, data in train.items():
        data = data.detach()
        torch.manual_seed(cfg.seed)
        d = make()
        if d.cfg.dead_tokens is None:  # the dead-latent window is relative to the run, as in train()
            d.cfg = d.cfg.replace(dead_tokens=d.dead_window(cfg.tokens, batch_size))
        scale = data.shape[1] ** 0.5 / data.norm(dim=1).mean().item()
        g = torch.Generator().manual_seed(cfg.seed)
        d.init_from_data(data[:batch_size] * scale, data[:batch_size] * scale, g)
        trainee, n_steps = Trainee(d, cfg), cfg.steps(batch_size)
        for step in tqdm(range(n_steps), desc=f"train on {name}", leave=False):
            idx = torch.randint(len(data), (batch_size,), generator=g)
            trainee.step(data[idx] * scale, data[idx] * scale, {}, cfg.lr_at(step, n_steps), cfg)
        d = d.exported(scale, scale)
        x = test[name].detach()
        with torch.no_grad():
            codes = d.encode(x.to(d.W_dec.dtype))
            err = (x - d.decode(codes).to(x.dtype)).double().pow(2).sum()
        fvu = err / (x.double() - x.double().mean(0)).pow(2).sum()
        rows.append({"component": name, "fvu": fvu.item(), "l0": (codes != 0).sum(-1).double().mean().item()})
        trained[name] = d
    return rows, trained
