"""Pooling, whitening, multi-row search and scoring on cached feature maps (see extract.py).

Scoring reimplements /work/shared/eval/eval_retrieval.py exactly for the single-row case
(copy R@1 per transform; category leave-one-out macro mAP and P@10 on 'coarse/fine' labels with
>= 3 members) and generalises it to several rows per image: an image's score for a query is the max
over (query row, database row) pairs, which is what the search service does when it groups hits by
image and keeps each image's best row.
"""
from __future__ import annotations

import collections
import csv
import os
import pickle

import numpy as np

# --------------------------------------------------------------------------------------------
# cached maps


def load_maps(cache: str, model: str, mode: str, size: int, which: str, variant: str = "none") -> list[np.ndarray]:
    """List of float16 (C, h, w) maps written by extract.py."""
    with open(os.path.join(cache, f"{model}_{mode}{size}_{which}_{variant}.pkl"), "rb") as fh:
        return pickle.load(fh)["maps"]


# --------------------------------------------------------------------------------------------
# pooling


def gem(m: np.ndarray, p: float, eps: float = 1e-6) -> np.ndarray:
    """GeM over the spatial axes of one (C, h, w) map (p=1: average; maps are ReLU6 >= 0)."""
    x = np.maximum(m.astype(np.float32), eps).reshape(m.shape[0], -1)
    if p == 1:
        return x.mean(1)
    return np.power(np.power(x, p).mean(1), 1.0 / p)


def grid_regions(h: int, w: int, levels=(2, 3)) -> list[tuple[int, int, int, int]]:
    """Overlapping square-ish grid windows (y0, y1, x0, x1) on an h x w map: for each level n an
    n x n grid of windows 2/(n+1) of each side (n=2: four 2/3 windows, n=3: nine 1/2 windows)."""
    out = []
    for n in levels:
        hh, ww = max(1, int(round(2 * h / (n + 1)))), max(1, int(round(2 * w / (n + 1))))
        ys = np.linspace(0, h - hh, n).round().astype(int)
        xs = np.linspace(0, w - ww, n).round().astype(int)
        out += [(y, y + hh, x, x + ww) for y in ys for x in xs]
    return out


def pool_rows(maps: list[np.ndarray], p: float, levels=()) -> tuple[np.ndarray, np.ndarray]:
    """Global GeM row per map, plus one GeM row per grid region when levels are given.
    Returns (rows (R, C) float32, owner (R,) index of the map each row comes from)."""
    rows, owner = [], []
    for i, m in enumerate(maps):
        rows.append(gem(m, p)); owner.append(i)
        if levels:
            for y0, y1, x0, x1 in grid_regions(m.shape[1], m.shape[2], levels):
                rows.append(gem(m[:, y0:y1, x0:x1], p)); owner.append(i)
    return np.stack(rows), np.asarray(owner)


def multiscale(maps_by_scale: list[list[np.ndarray]], p: float) -> np.ndarray:
    """Sum of L2-normalised global GeM vectors over scales (one (N, C) array)."""
    return sum(l2n(np.stack([gem(m, p) for m in ms])) for ms in maps_by_scale)


def l2n(x: np.ndarray) -> np.ndarray:
    return x / (np.linalg.norm(x, axis=-1, keepdims=True) + 1e-9)


# --------------------------------------------------------------------------------------------
# whitening


class PCAW:
    """PCA whitening learned on L2-normalised training rows: y = l2n(D^-1/2 U^T (l2n(x) - mu)).

    shrink in [0, 1] regularises the eigenvalues: lam' = (1 - shrink) * lam + shrink * mean(lam)
    (0 = full whitening, 1 = plain PCA rotation). power in (0, 1] applies signed power-law
    normalisation x -> sign(x)|x|^power before everything (0.5 = signed square root)."""

    def __init__(self, dim: int = 512, shrink: float = 0.0, power: float = 1.0):
        self.dim, self.shrink, self.power = dim, shrink, power

    def _pre(self, x: np.ndarray) -> np.ndarray:
        if self.power != 1.0:
            x = np.sign(x) * np.abs(x) ** self.power
        return l2n(x.astype(np.float64))

    def fit(self, x: np.ndarray) -> "PCAW":
        x = self._pre(x)
        self.mu = x.mean(0)
        lam, u = np.linalg.eigh(np.cov((x - self.mu).T))
        order = np.argsort(-lam)[: self.dim]
        lam, u = np.maximum(lam[order], 1e-12), u[:, order]
        lam = (1 - self.shrink) * lam + self.shrink * lam.mean()
        self.P = (u / np.sqrt(lam)).astype(np.float64)
        return self

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return l2n(((self._pre(x) - self.mu) @ self.P).astype(np.float32))


def power_norm(x: np.ndarray, a: float) -> np.ndarray:
    """Signed power-law normalisation followed by L2."""
    return l2n(np.sign(x) * np.abs(x) ** a)


# --------------------------------------------------------------------------------------------
# multi-row similarity


def image_sim(q: np.ndarray, q_owner: np.ndarray, nq: int, d: np.ndarray, d_owner: np.ndarray, nd: int) -> np.ndarray:
    """(nq, nd) image-level similarity: max over all (query row, db row) pairs of each pair of images."""
    s = q @ d.T
    if len(d_owner) != nd or not np.array_equal(d_owner, np.arange(nd)):
        order = np.argsort(d_owner, kind="stable")
        s = s[:, order]
        bounds = np.r_[0, np.cumsum(np.bincount(d_owner, minlength=nd))]
        s = np.maximum.reduceat(s, bounds[:-1], axis=1)
    if len(q_owner) != nq or not np.array_equal(q_owner, np.arange(nq)):
        order = np.argsort(q_owner, kind="stable")
        s = s[order]
        bounds = np.r_[0, np.cumsum(np.bincount(q_owner, minlength=nq))]
        s = np.maximum.reduceat(s, bounds[:-1], axis=0)
    return s


# --------------------------------------------------------------------------------------------
# evaluation set and scores (same definitions as eval_retrieval.py)


class EvalSet:
    def __init__(self, set_dir: str):
        self.gal = list(csv.DictReader(open(os.path.join(set_dir, "manifest.csv"))))
        gid = {r["id"]: i for i, r in enumerate(self.gal)}
        cq = list(csv.DictReader(open(os.path.join(set_dir, "gt_copy.csv"))))
        self.q_target = np.array([gid[r["target_id"]] for r in cq])
        self.q_transform = np.array([r["transform"] for r in cq])
        self.transforms = list(dict.fromkeys(self.q_transform))
        lab = [(r["coarse"] + "/" + r["fine"]) if r["fine"] else "" for r in self.gal]
        cnt = collections.Counter(l for l in lab if l)
        self.lab, self.cnt = lab, cnt
        self.cat_idx = np.array([i for i, l in enumerate(lab) if l and cnt[l] >= 3])
        self.n = len(self.gal)

    def copy_scores(self, sim: np.ndarray) -> dict[str, float]:
        """sim: (n_queries, n_gallery). R@1 per transform (ties broken like argsort(-sim)[0])."""
        top = np.argmax(sim, axis=1)  # first max == argsort(-s)[0] for distinct values
        hit = top == self.q_target
        return {t: float(hit[self.q_transform == t].mean()) for t in self.transforms}

    def category_scores(self, sim: np.ndarray) -> tuple[float, float]:
        """sim: (len(cat_idx), n_gallery) similarities of each labelled query to every gallery image
        (the query's own column is ignored). Returns (macro mAP, macro P@10)."""
        s = sim.copy()
        s[np.arange(len(self.cat_idx)), self.cat_idx] = -np.inf
        per = collections.defaultdict(list)
        labs = np.array(self.lab)
        for k, i in enumerate(self.cat_idx):
            order = np.argsort(-s[k], kind="stable")[:-1]
            relv = (labs[order] == self.lab[i]).astype(np.float32)
            hits = np.cumsum(relv)
            ap = float(((hits / np.arange(1, len(relv) + 1)) * relv).sum() / max(self.cnt[self.lab[i]] - 1, 1))
            per[self.lab[i]].append((ap, relv[:10].mean()))
        m = np.mean([np.mean(v, 0) for v in per.values()], 0)
        return float(m[0]), float(m[1])


# --------------------------------------------------------------------------------------------
# query expansion and database-side augmentation


def alpha_qe(q: np.ndarray, db: np.ndarray, sim: np.ndarray, k: int, alpha: float, exclude=None) -> np.ndarray:
    """alpha-QE: q' = l2n(q + sum_{top-k db} sim^alpha * db). db: one row per image (N, D);
    sim (nq, N) ranks them; exclude[i] (a db index) is never used for query i (leave-one-out)."""
    s = sim.copy()
    if exclude is not None:
        s[np.arange(len(s)), exclude] = -np.inf
    top = np.argsort(-s, axis=1)[:, :k]
    w = np.clip(np.take_along_axis(s, top, 1), 0, None) ** alpha
    return l2n(q + (w[..., None] * db[top]).sum(1))


def dba(db: np.ndarray, k: int, alpha: float, drop: int | None = None) -> np.ndarray:
    """Database-side augmentation: each db row -> l2n(sum over itself and its k nearest rows of
    sim^alpha * row). drop: an image index removed from the database first (leave-one-out)."""
    s = db @ db.T
    if drop is not None:
        s[:, drop] = -np.inf
    np.fill_diagonal(s, np.inf)  # self first, weight 1
    top = np.argsort(-s, axis=1)[:, : k + 1]
    w = np.take_along_axis(s, top, 1)
    w[:, 0] = 1.0
    w = np.clip(w, 0, None) ** alpha
    return l2n((w[..., None] * db[top]).sum(1))
