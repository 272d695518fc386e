"""The evaluation stage: every robustness instrument on one trained model (MATH 6, 7, 9, 11).

Instruments, each a row per ``eps`` of ``robustness.csv``
(:data:`nemon.contracts.ROBUSTNESS_COLUMNS`):

* ``clean`` — accuracy at the evaluation tolerance;
* ``inversion`` — the paper's attack (MATH 7), full test set;
* ``certified_lipschitz`` — the certificate of MATH 6, full test set;
* ``certified_interval`` — interval bounds through the equilibrium (MATH 9), full test set;
* ``pgd`` — l_inf PGD with restarts (MATH 11), on a seeded class-stratified subset;
* ``autoattack`` — AutoAttack, standard version, on a smaller subset nested in PGD's.

For every subset a costly attack uses, the cheap instruments are reported on
that subset too, so every ordering of MATH 11 can be checked on the same
inputs. Per image, an input certified at ``eps`` (by either certificate) must
survive every attack at ``eps``: the ``violations`` column counts the inputs
where it did not (a bug, never a result). Every row records how concentrated
the predictions are (``top_class_fraction``; ``degenerate`` from 0.9 on) and
how many solves behind it stopped at ``max_iter`` (``not_converged``).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from torch import Tensor, nn

from . import attacks
from ._checks import check_eps
from .attacks import inversion_attack
from .certificates import certified_mask, lipschitz_radius
from .contracts import DEGENERATE_SHARE, POINT_KEYS
from .data import stratified_subset
from .errors import ConfigurationError, NonConvergenceWarning, PrecisionWarning
from .fileio import atomic_write_text
from .lipschitz_lower import lipschitz_lower_bound
from .training import to_pixels

CERTIFICATE_DTYPES = {"float32": torch.float32, "float64": torch.float64}


# Every default of the evaluation lives in the config schema (nemon/config.schema.yaml, block
# `evaluation:`), nowhere else: a field left at None takes the schema's default when the
# settings are built. Field -> its key path in the `evaluation:` block.
_EVALUATION_KEYS = {
    "tol": ("tol",),
    "max_iter": ("max_iter",),
    "attack_tol": ("attack_tol",),
    "batch_size": ("batch_size",),
    "subset_seed": ("subset_seed",),
    "inversion_eps": ("inversion", "eps"),
    "lipschitz_eps": ("certified_lipschitz", "eps"),
    "interval_eps": ("certified_interval", "eps"),
    "lower_bound_images": ("lipschitz_lower", "images"),
    "lower_bound_steps": ("lipschitz_lower", "steps"),
    "lower_bound_step_size": ("lipschitz_lower", "step_size"),
    "warm_start": ("warm_start",),
    "certificate_dtype": ("certificate_dtype",),
    "skip_certified": ("skip_certified",),
}
_ATTACKS = ("pgd", "autoattack")


def _lookup(block: Mapping, path: Sequence[str]):
    for key in path:
        if not isinstance(block, Mapping) or key not in block:
            return None
        block = block[key]
    return block


@dataclass(frozen=True)
class AttackSettings:
    """One costly attack: its radii, how many test images, and its iteration budget.

    A field left at None takes the schema's default for the attack it is given to in
    :class:`EvalSettings` (``evaluation.pgd`` or ``evaluation.autoattack``); a field that
    attack has no key for stays None (``restarts`` of AutoAttack, ``queries`` of PGD).
    """

    eps: tuple[float, ...] | None = None
    images: int | None = None
    steps: int | None = None
    restarts: int | None = None  # PGD's restarts
    queries: int | None = None  # Square's query budget (AutoAttack)

    @classmethod
    def from_config(cls, block: Mapping) -> AttackSettings:
        """From an attack's block of the config (``evaluation.pgd``, ``evaluation.autoattack``)."""
        return cls(**{f.name: block.get(f.name) for f in fields(cls)})

    def completed(self, defaults: Mapping) -> AttackSettings:
        """These settings with every field left at None taken from ``defaults`` (the attack's
        block of the schema's defaults)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values = {k: defaults.get(k) if v is None else v for k, v in values.items()}
        if values["eps"] is not None:
            values["eps"] = tuple(values["eps"])
        return AttackSettings(**values)


@dataclass(frozen=True)
class EvalSettings:
    """Everything the evaluation stage needs (the ``evaluation:`` block of the config).

    Every field left at None (the default of each) takes the config schema's default, so
    ``EvalSettings(tol=1e-8)`` is the schema's evaluation at another tolerance;
    :meth:`from_config` builds the settings from a (validated) ``evaluation`` block.
    """

    tol: float | None = None
    max_iter: int | None = None
    attack_tol: float | None = None
    batch_size: int | None = None
    subset_seed: int | None = None
    inversion_eps: tuple[float, ...] | None = None
    lipschitz_eps: tuple[float, ...] | None = None
    interval_eps: tuple[float, ...] | None = None
    pgd: AttackSettings | None = None
    autoattack: AttackSettings | None = None
    lower_bound_images: int | None = None
    lower_bound_steps: int | None = None
    lower_bound_step_size: float | None = None
    # PGD's and AutoAttack's solves start from the last solution (NEMON.warm_starts)
    warm_start: bool | None = None
    # the dtype the certificates are computed in (MATH 12: in float32 the rounding term of
    # the error bars costs certified accuracy; in float64 it is negligible)
    certificate_dtype: str | None = None
    # inputs certified at an attack's eps (either certificate) are not attacked (MATH 6)
    skip_certified: bool | None = None

    def __post_init__(self) -> None:
        self._complete()
        for name in ("inversion_eps", "lipschitz_eps", "interval_eps"):
            for e in getattr(self, name):
                check_eps(e)
        for atk in (self.pgd, self.autoattack):
            for e in atk.eps:
                check_eps(e)
            budgets = (atk.images, atk.steps, atk.restarts, atk.queries)
            if any(v is not None and v < 1 for v in budgets):
                raise ConfigurationError(f"attack settings must be >= 1, got {atk}")
        if self.certificate_dtype not in CERTIFICATE_DTYPES:
            raise ConfigurationError(
                f"certificate_dtype must be one of {sorted(CERTIFICATE_DTYPES)}, got "
                f"{self.certificate_dtype!r}"
            )
        if self.autoattack.eps and self.pgd.eps and self.autoattack.images > self.pgd.images:
            raise ConfigurationError(
                f"autoattack.images={self.autoattack.images} must not exceed pgd.images="
                f"{self.pgd.images}: AutoAttack's subset is nested in PGD's"
            )

    def _complete(self) -> None:
        """Fill every field left at None with the schema's default (frozen: set in place once,
        while the object is being built)."""
        from .config import schema_defaults  # reads the package's schema

        defaults = schema_defaults()["evaluation"]
        for name, path in _EVALUATION_KEYS.items():
            value = getattr(self, name)
            if value is None:
                value = _lookup(defaults, path)
            if name.endswith("_eps"):
                value = tuple(value)
            object.__setattr__(self, name, value)
        for name in _ATTACKS:
            atk = getattr(self, name) or AttackSettings()
            object.__setattr__(self, name, atk.completed(defaults[name]))

    @classmethod
    def from_config(cls, cfg: Mapping) -> EvalSettings:
        """From the ``evaluation`` block of the workflow config (validated; keys it lacks take
        the schema's defaults)."""
        return cls(
            **{name: _lookup(cfg, path) for name, path in _EVALUATION_KEYS.items()},
            **{name: AttackSettings.from_config(cfg.get(name, {})) for name in _ATTACKS},
        )


def run_attack(
    model: nn.Module,
    name: str,
    u: Tensor,
    labels: Tensor,
    eps: float,
    settings: EvalSettings,
    *,
    warm_start: bool | None = None,
    certified: Tensor | None = None,
) -> attacks.AttackResult:
    """``name`` ("pgd" or "autoattack") at ``eps`` as the evaluation runs it.

    Solver tolerances, budgets and seed from ``settings``; ``warm_start``
    overrides ``settings.warm_start``; ``certified`` flags the inputs a certificate proves
    robust at ``eps``, which are not attacked (:func:`nemon.attacks.pgd`).
    """
    if name not in ("pgd", "autoattack"):
        raise ConfigurationError(f"unknown attack {name!r}; choose pgd or autoattack")
    s = settings
    atk = getattr(s, name)
    common = dict(
        seed=s.subset_seed,
        tol=s.attack_tol,
        max_iter=s.max_iter,
        eval_tol=s.tol,
        eval_max_iter=s.max_iter,
        batch_size=s.batch_size,
        warm_start=s.warm_start if warm_start is None else warm_start,
        certified=certified,
    )
    if name == "pgd":
        return attacks.pgd(model, u, labels, eps, steps=atk.steps, restarts=atk.restarts, **common)
    return attacks.autoattack(
        model, u, labels, eps, steps=atk.steps, n_queries=atk.queries, **common
    )


class _Counter:
    """Counts the model's non-converged solves by catching its warnings (one per call)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def __call__(self, fn: Callable, *args, **kw):
        """Run ``fn``; return its result and how many forward solves did not converge."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NonConvergenceWarning)
            warnings.simplefilter("ignore", PrecisionWarning)
            out = fn(*args, **kw)
        st = self.model.last_forward_stats
        return out, int(st is not None and not st.converged)


def _batched(model, X, batch_size, fn) -> tuple[list, int]:
    outs, bad = [], 0
    counter = _Counter(model)
    for i in range(0, len(X), batch_size):
        out, nc = counter(fn, i, min(i + batch_size, len(X)))
        outs.append(out)
        bad += nc
    return outs, bad


def _share(pred: Tensor) -> float:
    if pred.numel() == 0:
        return 0.0
    return float(torch.bincount(pred).max()) / pred.numel()


def evaluate_model(
    model: nn.Module,
    test_x: Tensor,
    test_y: Tensor,
    settings: EvalSettings,
    *,
    progress: Callable[[str], None] = lambda s: None,
) -> tuple[list[dict], dict]:
    """All instruments on one model; returns ``(rows, record)``.

    ``rows`` hold the instrument columns of ``robustness.csv`` (without the
    model's keys); ``record`` the scalars of ``evaluation.json`` (clean accuracy,
    the Lipschitz lower bound, timings, settings). The weights stay as they are
    throughout, so what depends on them alone is built once
    (``solving(frozen=True)`` of :class:`nemon.protocol.ImplicitModel`).
    """
    with model.solving(frozen=True):
        return _evaluate_model(model, test_x, test_y, settings, progress)


def _evaluate_model(
    model: nn.Module,
    test_x: Tensor,
    test_y: Tensor,
    settings: EvalSettings,
    progress: Callable[[str], None],
) -> tuple[list[dict], dict]:
    t_start = time.perf_counter()
    model.eval()
    p0 = next(model.parameters())
    dev, dt = p0.device, p0.dtype
    X = to_pixels(test_x)
    Y = test_y.to(torch.long).cpu()
    N = len(X)
    bs = settings.batch_size
    s = settings
    timings: dict[str, float] = {}

    def on(i, j):
        return X[i:j].to(dev, dt), Y[i:j].to(dev)

    # the certificates' copy of the model: the same weights in certificate_dtype (MATH 12)
    cdt = CERTIFICATE_DTYPES[s.certificate_dtype]
    cert_model = model if cdt == dt else copy.deepcopy(model).to(cdt)

    def on_cert(i, j):
        return X[i:j].to(dev, cdt), Y[i:j].to(dev)

    with (
        model.solving(tol=s.tol, max_iter=s.max_iter, stop="step"),
        cert_model.solving(tol=s.tol, max_iter=s.max_iter, stop="step", frozen=True),
        torch.no_grad(),
    ):
        t0 = time.perf_counter()
        if cert_model is model:  # one solve per batch: predictions and the Lipschitz radii

            def clean(i, j):
                u, y = on(i, j)
                radius, pred = lipschitz_radius(model, u, y)
                return radius.cpu(), pred.cpu()

            outs, clean_bad = _batched(model, X, bs, clean)
            radius = torch.cat([o[0] for o in outs])
            pred = torch.cat([o[1] for o in outs])
        else:  # predictions from the model as it is, radii from the certificates' copy
            outs, clean_bad = _batched(model, X, bs, lambda i, j: model(on(i, j)[0]).argmax(1))
            pred = torch.cat(outs).cpu()
            outs, _ = _batched(
                cert_model, X, bs, lambda i, j: lipschitz_radius(cert_model, *on_cert(i, j))[0]
            )
            radius = torch.cat(outs).cpu()
        correct = pred == Y
        radius = torch.where(correct, radius, torch.zeros_like(radius))
        timings["clean+certified_lipschitz"] = time.perf_counter() - t0
        progress(f"clean accuracy {float(correct.double().mean()):.4f}")

        flags: dict[tuple[str, float], dict] = {}
        flags["clean", 0.0] = {"ok": correct, "pred": pred, "bad": clean_bad, "idx": None}
        for eps in s.lipschitz_eps:
            ok = radius > eps
            flags["certified_lipschitz", eps] = {
                "ok": ok,
                "pred": pred,
                "bad": clean_bad,
                "idx": None,
            }
        t0 = time.perf_counter()
        for eps in s.inversion_eps:
            if eps == 0:  # u + 0 (1 - 2u) is u: the clean pass's solve, bit for bit
                flags["inversion", eps] = {**flags["clean", 0.0], "ok": correct.clone()}
                continue

            def inv(i, j, eps=eps):
                u, _ = on(i, j)
                return model(inversion_attack(u, eps)).argmax(dim=1).cpu()

            outs, bad = _batched(model, X, bs, inv)
            p = torch.cat(outs)
            flags["inversion", eps] = {"ok": p == Y, "pred": p, "bad": bad, "idx": None}
        timings["inversion"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        # the embedded iteration contracts only where the averaged one does (MATH 9, 15)
        interval_available = model.rho() < 1.0
        for eps in s.interval_eps if interval_available else ():

            def cert(i, j, eps=eps):
                u, y = on_cert(i, j)
                # the clean pass's correctness: no second clean solve
                ok = certified_mask(cert_model, u, y, eps, "interval", correct=correct[i:j])
                return ok.cpu()

            outs, bad = _batched(cert_model, X, bs, cert)
            flags["certified_interval", eps] = {
                "ok": torch.cat(outs),
                "pred": pred,
                "bad": bad,
                "idx": None,
            }
            share = float(flags["certified_interval", eps]["ok"].double().mean())
            progress(f"interval certificate at eps {eps}: {share:.4f}")
        timings["certified_interval"] = time.perf_counter() - t0

    # the costly attacks, on nested seeded class-stratified subsets
    subsets: dict[str, Tensor] = {}
    skipped: dict[str, int] = {}
    for name, atk in (("pgd", s.pgd), ("autoattack", s.autoattack)):
        if not atk.eps:
            continue
        n = min(atk.images, N)
        idx = stratified_subset(Y, n, seed=s.subset_seed)
        subsets[name] = idx
        t0 = time.perf_counter()
        u, y = X[idx].to(dev, dt), Y[idx].to(dev)
        for eps in atk.eps:
            known = _certified_at(flags, eps, N) if s.skip_certified else None
            res = run_attack(model, name, u, y, eps, s, certified=_on(known, idx))
            ok = torch.zeros(N, dtype=torch.bool)
            ok[idx] = res.robust.cpu()
            with torch.no_grad(), model.solving(tol=s.tol, max_iter=s.max_iter, stop="step"):
                adv_pred = torch.cat(
                    [
                        model(res.adversarial[i : i + bs]).argmax(dim=1).cpu()
                        for i in range(0, n, bs)
                    ]
                )
            bad = res.attack_solves.unconverged + res.eval_solves.unconverged
            flags[name, eps] = {"ok": ok, "pred": adv_pred, "bad": bad, "idx": idx}
            skipped[f"{name}@{eps:g}"] = res.certified
            progress(
                f"{name} at eps {eps}: {res.accuracy:.4f} on {n} images ({res.wall_time_s:.1f} s"
                f", {res.certified} certified, not attacked)"
            )
        timings[name] = time.perf_counter() - t0

    rows = _rows(flags, subsets, Y)
    t0 = time.perf_counter()
    lower = _lower_bound(model, X, Y, s)
    timings["lipschitz_lower"] = time.perf_counter() - t0
    with torch.no_grad():
        bound = float(model.lipschitz_bound())
    record = {
        "clean_acc": float(correct.double().mean()),
        "clean_not_converged": clean_bad,
        "lipschitz_lower": lower["value"],
        "lipschitz_lower_detail": lower,
        "lipschitz_bound": bound,
        "lipschitz_tightness": bound / lower["value"] if lower["value"] > 0 else math.inf,
        "interval_available": interval_available,
        "evaluation_seconds": time.perf_counter() - t_start,
        "timings": timings,
        "certified_not_attacked": skipped,
        "settings": _settings_dict(s),
    }
    return rows, record


def _certified_at(flags: dict, eps: float, n: int) -> Tensor:
    """Per test input: certified at ``eps`` by either certificate that was computed there."""
    out = torch.zeros(n, dtype=torch.bool)
    for cert in ("certified_lipschitz", "certified_interval"):
        if (cert, eps) in flags:
            out |= flags[cert, eps]["ok"]
    return out


def _on(mask: Tensor | None, idx: Tensor) -> Tensor | None:
    return None if mask is None else mask[idx]


def _settings_dict(s: EvalSettings) -> dict:
    d = asdict(s)
    return d


def _rows(flags: dict, subsets: dict[str, Tensor], Y: Tensor) -> list[dict]:
    """Tidy rows, on the full test set and on every attack subset; with violations counted."""
    N = len(Y)
    input_sets: list[tuple[str, Tensor | None]] = [("test", None)]
    for name in ("pgd", "autoattack"):
        if name in subsets:
            input_sets.append((f"subset-{len(subsets[name])}", subsets[name]))
    seen = set()
    rows = []
    for label, idx in input_sets:
        if label in seen:
            continue
        seen.add(label)
        sel = torch.ones(N, dtype=torch.bool) if idx is None else torch.zeros(N, dtype=torch.bool)
        if idx is not None:
            sel[idx] = True
        for (attack, eps), f in flags.items():
            if f["idx"] is not None and (idx is None or not torch.equal(f["idx"], idx)):
                continue  # a costly attack is reported on its own subset only
            ok = f["ok"][sel]
            pred = f["pred"] if f["idx"] is not None else f["pred"][sel]
            violations = 0
            if attack in ("inversion", "pgd", "autoattack"):
                for cert in ("certified_lipschitz", "certified_interval"):
                    if (cert, eps) in flags:
                        violations = max(violations, int((flags[cert, eps]["ok"][sel] & ~ok).sum()))
            share = _share(pred)
            rows.append(
                {
                    "attack": attack,
                    "eps": float(eps),
                    "inputs": label,
                    "images": int(sel.sum()),
                    "accuracy": float(ok.double().mean()),
                    "top_class_fraction": share,
                    "degenerate": bool(share >= DEGENERATE_SHARE),
                    "not_converged": int(f["bad"]),
                    "violations": violations,
                }
            )
    return rows


def _lower_bound(model: nn.Module, X: Tensor, Y: Tensor, s: EvalSettings) -> dict:
    n = min(s.lower_bound_images, len(X))
    if n == 0:
        return {"value": 0.0}
    idx = stratified_subset(Y, n, seed=s.subset_seed)
    p0 = next(model.parameters())
    dev, dt = p0.device, p0.dtype
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NonConvergenceWarning)
        warnings.simplefilter("ignore", PrecisionWarning)
        lb = lipschitz_lower_bound(
            model,
            X[idx].to(dev, dt),
            steps=s.lower_bound_steps,
            step_size=s.lower_bound_step_size,
            n_random=2,
            seed=s.subset_seed,
            tol=s.tol,
            max_iter=s.max_iter,
        )
    # the finite-difference ratio is achieved by a pair of inputs: that is the lower bound
    value = lb.fd_ratio if lb.agree and math.isfinite(lb.fd_ratio) else lb.value
    return {
        "value": float(value),
        "gradient_value": float(lb.value),
        "fd_ratio": float(lb.fd_ratio),
        "agree": bool(lb.agree),
        "class": int(lb.k),
        "note": lb.note,
    }


def check_orderings(df, *, pgd_slack: float = 0.02) -> list[str]:
    """The orderings of MATH 11 in one robustness table; returns the violations found.

    On the same inputs and ``eps``: certified (either) <= every attack; and
    AutoAttack <= PGD + ``pgd_slack`` (PGD is random; AutoAttack is expected,
    not proven, to be at least as strong). Per image: ``violations == 0``.
    """
    problems = []
    keys = [*POINT_KEYS, "inputs", "eps"]
    for row in df[df["violations"] > 0].itertuples():
        problems.append(
            f"{_name(row)}: {row.violations} image(s) certified at eps {row.eps} yet broken by "
            f"{row.attack} ({row.inputs})"
        )
    acc = df.pivot_table(index=keys, columns="attack", values="accuracy", aggfunc="first")
    for cert in ("certified_lipschitz", "certified_interval"):
        if cert not in acc:
            continue
        for atk in ("inversion", "pgd", "autoattack"):
            if atk not in acc:
                continue
            both = acc[[cert, atk]].dropna()
            for key, r in both[both[cert] > both[atk] + 1e-12].iterrows():
                where = dict(zip(keys, key, strict=True))
                problems.append(f"{where}: {cert} {r[cert]:.4f} > {atk} {r[atk]:.4f}")
    if "pgd" in acc and "autoattack" in acc:
        both = acc[["pgd", "autoattack"]].dropna()
        for key, r in both[both["autoattack"] > both["pgd"] + pgd_slack].iterrows():
            where = dict(zip(keys, key, strict=True))
            problems.append(
                f"{where}: autoattack {r['autoattack']:.4f} > pgd {r['pgd']:.4f} + {pgd_slack}"
            )
    return problems


def _name(row) -> str:
    return (
        f"{row.experiment} ({row.model}/{row.objective}) gamma={row.gamma} lam={row.lam} "
        f"eps_t={row.eps_t} seed={row.seed}"
    )


# --- resuming an interrupted group evaluation ---------------------------------------------------
def source_digest() -> str:
    """SHA-256 of the nemon package's source files: the code as it is, which a commit alone does
    not pin when the checkout has uncommitted changes."""
    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for f in sorted(root.rglob("*.py")):
        h.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def evaluation_fingerprint(
    settings: EvalSettings,
    model_sha256: str,
    keys: Mapping,
    test_x: Tensor,
    test_y: Tensor,
    code: Mapping,
) -> str:
    """SHA-256 naming one model's evaluation: the evaluation settings, the model file (its
    SHA-256) and keys, the test set, and the code that runs it (``code``: versions, device,
    threads, CPU code path, commit, :func:`source_digest`). :class:`PartialEvaluation` reuses a
    kept record only under the same fingerprint."""
    h = hashlib.sha256()
    described = {
        "settings": _settings_dict(settings),
        "model_sha256": model_sha256,
        "keys": dict(keys),
        "code": dict(code),
    }
    h.update(json.dumps(described, sort_keys=True, default=str).encode())
    for t in (test_x, test_y):
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype} {tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _entry_digest(entry: Mapping) -> str:
    body = {k: v for k, v in entry.items() if k != "sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


class PartialEvaluation:
    """The models of a group evaluation evaluated so far: their rows and records, kept in a side
    file until the job ends, so that a rerun of an interrupted job skips them.

    The file (``<group>`` + :attr:`SUFFIX`, beside the group's training checkpoint) is not an
    output of the job, so Snakemake does not delete it when the job fails or is stopped. Each
    model's entry holds the :func:`evaluation_fingerprint` it was made under and a digest of
    itself; :meth:`get` returns it only for the same fingerprint, and a damaged or foreign
    file or entry is ignored (logged), so a record of other settings, another model file or
    other code is never reused: the model is evaluated again. Written atomically after every
    model; :meth:`remove` once the job has written its outputs.
    """

    FORMAT = "nemon.evaluation-partial/1"
    SUFFIX = ".evaluation-partial.json"

    def __init__(self, path: str | os.PathLike[str], *, log: Callable[[str], None] = print):
        self.path = Path(path)
        self.log = log
        self.entries: dict[str, dict] = {}
        if not self.path.exists():
            return
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            log(f"ignoring {self.path}: it cannot be read ({type(e).__name__}: {e})")
            return
        if not (
            isinstance(data, dict)
            and data.get("format") == self.FORMAT
            and isinstance(data.get("models"), dict)
        ):
            log(f"ignoring {self.path}: it is not a {self.FORMAT} file")
            return
        for name, entry in data["models"].items():
            ok = isinstance(entry, dict) and {"fingerprint", "rows", "record"} <= entry.keys()
            if not ok or _entry_digest(entry) != entry.get("sha256"):
                log(f"ignoring the record of {name} kept in {self.path}: it is damaged")
                continue
            self.entries[name] = entry

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, name: str, fingerprint: str) -> tuple[list[dict], dict] | None:
        """The kept ``(rows, record)`` of model ``name`` if made under ``fingerprint``."""
        entry = self.entries.get(name)
        if entry is None:
            return None
        if entry["fingerprint"] != fingerprint:
            self.log(
                f"{name}: the record kept in {self.path} was made with other evaluation "
                "settings, another model file or test set, or other code; evaluating it again"
            )
            del self.entries[name]  # replaced once evaluated again
            return None
        return copy.deepcopy(entry["rows"]), copy.deepcopy(entry["record"])

    def add(self, name: str, fingerprint: str, rows: list[dict], record: dict) -> None:
        """Keep model ``name``'s ``(rows, record)`` made under ``fingerprint`` (atomic write)."""
        entry = json.loads(json.dumps({"fingerprint": fingerprint, "rows": rows, "record": record}))
        entry["sha256"] = _entry_digest(entry)
        self.entries[name] = entry
        text = json.dumps({"format": self.FORMAT, "models": self.entries}, indent=1)
        atomic_write_text(self.path, text + "\n")

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


__all__: Sequence[str] = [
    "AttackSettings",
    "EvalSettings",
    "PartialEvaluation",
    "check_orderings",
    "evaluate_model",
    "evaluation_fingerprint",
    "source_digest",
]
