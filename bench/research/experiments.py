#!/usr/bin/env python3
"""Score descriptor recipes on cached feature maps (run extract.py first for every map a group needs).

    /tmp/exportvenv/bin/python bench/research/experiments.py --set .cache/evalset --group pooling
    /tmp/exportvenv/bin/python bench/research/experiments.py --set .cache/evalset --group all

Each scored recipe is appended to --results (JSON lines, latest wins per name); report.py turns that
file into RESULTS.md. A recipe is a dict:
    mode, size         resize mode ('squash' | 'aspect') and size of the base scale
    scales             extra sizes whose L2-normalised global GeM is summed with the base one
    p                  GeM exponent
    db_variants        extra database rows from re-run rotated/mirrored images (extract.py variants)
    db_levels          grid levels of feature-map regions stored as extra database rows (() = none)
    q_levels           grid levels of query-map regions used as extra query rows
    whiten             None | 'ext' (learned on whiten_data.py images, not in the eval set) |
                       'gallery' (learned on the gallery itself: comparison only)
    dim, shrink, power PCA-whitening output dim, eigenvalue shrinkage, signed power before it
    qe                 (k, alpha) alpha-QE on the global query row, or None
    dba                (k, alpha) database-side augmentation of db global rows, or None
    cat_upright        category retrieval searches only the unrotated image's rows
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

import rlib

BASE = dict(model="lite0", mode="aspect", size=320, scales=(), p=1.0, db_variants=(), db_levels=(), q_levels=(),
            whiten=None, dim=0, shrink=0.0, power=1.0, qe=None, dba=None, wtrain_levels=(2, 3), cat_upright=False)


class Runner:
    def __init__(self, set_dir: str, cache: str, wlist: str, results: str):
        self.es = rlib.EvalSet(set_dir)
        self.cache, self.results = cache, results
        self.wtag = os.path.splitext(os.path.basename(wlist))[0]
        self._maps: dict = {}
        self._pooled: dict = {}

    # ---- cached maps and pooled rows ------------------------------------------------------
    def maps(self, model, mode, size, which, variant="none"):
        key = (model, mode, size, which, variant)
        if key not in self._maps:
            self._maps[key] = rlib.load_maps(self.cache, model, mode, size, which, variant)
        return self._maps[key]

    def pooled(self, model, mode, size, which, variant, p, levels):
        """(rows, owner) for one map set, memoised."""
        key = (model, mode, size, which, variant, p, tuple(levels))
        if key not in self._pooled:
            self._pooled[key] = rlib.pool_rows(self.maps(model, mode, size, which, variant), p, levels)
        return self._pooled[key]

    def rows(self, c, which, variant, levels):
        """Rows of one image set under recipe c: global (multi-scale sum when c['scales']) + regions."""
        r, o = self.pooled(c["model"], c["mode"], c["size"], which, variant, c["p"], levels)
        r = rlib.l2n(r)
        if c["scales"]:
            first = np.r_[True, o[1:] != o[:-1]]  # the global row leads each image's rows
            r = r.copy()
            for s in c["scales"]:
                g, _ = self.pooled(c["model"], c["mode"], s, which, variant, c["p"], ())
                r[first] += rlib.l2n(g)
            r = rlib.l2n(r)
        return r, o

    # ---- one recipe -------------------------------------------------------------------------
    def run(self, name: str, group: str, **kw) -> dict:
        c = dict(BASE, **kw)
        es, n = self.es, self.es.n
        t0 = time.time()
        q, qo = self.rows(c, "queries", "none", c["q_levels"])
        gq, gqo = self.rows(c, "gallery", "none", c["q_levels"])  # gallery images as (category) queries
        d, do = self.rows(c, "gallery", "none", c["db_levels"])
        dparts, oparts = [d], [do]
        for v in c["db_variants"]:
            dv, dvo = self.rows(c, "gallery", v, c["db_levels"])
            dparts.append(dv); oparts.append(dvo)
        d, do = np.concatenate(dparts), np.concatenate(oparts)
        if c["whiten"]:
            src = self.wtag if c["whiten"] == "ext" else "gallery"
            wr, _ = self.rows(c, src, "none", c["wtrain_levels"])
            w = rlib.PCAW(c["dim"] or wr.shape[1], c["shrink"], c["power"]).fit(wr)
            q, gq, d = w(q), w(gq), w(d)
        elif c["power"] != 1.0:
            q, gq, d = (rlib.power_norm(x, c["power"]) for x in (q, gq, d))
        first = np.r_[True, do[1:] != do[:-1]]
        n0 = len(dparts[0])
        dglob = d[:n0][first[:n0]]  # global row of each unrotated gallery image, (n, D)
        copy_sim = rlib.image_sim(q, qo, len(es.q_target), d, do, n)
        cat_rows = np.isin(gqo, es.cat_idx)
        gq_c, gqo_c = gq[cat_rows], np.searchsorted(es.cat_idx, gqo[cat_rows])
        # cat_upright: category search uses only the rows of the unrotated image (a filter on a row tag)
        dc, dco = (d[:n0], do[:n0]) if c["cat_upright"] else (d, do)
        cat_sim = rlib.image_sim(gq_c, gqo_c, len(es.cat_idx), dc, dco, n)
        if c["qe"]:
            k, a = c["qe"]
            qf = np.r_[True, qo[1:] != qo[:-1]]
            q2 = q.copy(); q2[qf] = rlib.alpha_qe(q[qf], dglob, copy_sim, k, a)
            copy_sim = rlib.image_sim(q2, qo, len(es.q_target), d, do, n)
            gf = np.r_[True, gqo_c[1:] != gqo_c[:-1]]
            g2 = gq_c.copy(); g2[gf] = rlib.alpha_qe(gq_c[gf], dglob, cat_sim, k, a, exclude=es.cat_idx)
            cat_sim = rlib.image_sim(g2, gqo_c, len(es.cat_idx), dc, dco, n)
        if c["dba"]:
            k, a = c["dba"]
            # copy: the augmented global rows replace the plain ones as extra rows (max over rows)
            dd = rlib.dba(dglob, k, a)
            copy_sim = np.maximum(copy_sim, rlib.image_sim(q, qo, len(es.q_target), dd, np.arange(n), n))
            # category, leave-one-out: the query image is removed from the database before DBA
            for kq, i in enumerate(es.cat_idx):
                ddi = rlib.dba(dglob, k, a, drop=i)
                rows = gq_c[gqo_c == kq]
                cat_sim[kq] = np.maximum(cat_sim[kq], (rows @ ddi.T).max(0))
        per = es.copy_scores(copy_sim)
        cat_map, cat_p10 = es.category_scores(cat_sim)
        n_scales = 1 + len(c["scales"])
        res = dict(name=name, group=group, copy=per, copy_mean=float(np.mean(list(per.values()))),
                   copy_min=float(min(per.values())), cat_map=cat_map, cat_p10=cat_p10,
                   dim=int(d.shape[1]), db_rows=len(d) / n, q_rows=len(q) / len(es.q_target),
                   fwd_query=n_scales, fwd_db=n_scales * (1 + len(c["db_variants"])),
                   recipe={k: v for k, v in c.items() if v != BASE[k]}, secs=round(time.time() - t0, 1))
        with open(self.results, "a") as fh:
            fh.write(json.dumps(res) + "\n")
        worst = min(per, key=per.get)
        print(f"{name:48s} copy {res['copy_mean']:.3f} min {res['copy_min']:.3f} ({worst}) rot90 {per['rot_90']:.3f} "
              f"canvas {per['embed_in_canvas']:.3f} crop30 {per['crop_random_30']:.3f} | cat mAP {cat_map:.3f} "
              f"P@10 {cat_p10:.3f} | dim {res['dim']} rows {res['db_rows']:.1f}/{res['q_rows']:.1f}", flush=True)
        return res


def group_pooling(r: Runner):
    r.run("baseline avg squash224", "pooling", mode="squash", size=224, p=1)
    for mode, size in [("squash", 224), ("aspect", 224), ("aspect", 288), ("squash", 320), ("aspect", 320), ("aspect", 448)]:
        for p in (1, 2, 3, 4):
            r.run(f"GeM p{p} {mode}{size}", "pooling", mode=mode, size=size, p=p)


def group_multiscale(r: Runner):
    for p in (1, 3):
        r.run(f"GeM p{p} aspect 224+320", "multiscale", size=320, scales=(224,), p=p)
        r.run(f"GeM p{p} aspect 320+448", "multiscale", size=320, scales=(448,), p=p)
        r.run(f"GeM p{p} aspect 224+320+448", "multiscale", size=320, scales=(224, 448), p=p)


def group_whiten(r: Runner, mode="aspect", size=320, p=3):
    tag = f"{mode}{size} p{p}"
    for pw in (1.0, 0.5):
        r.run(f"{tag} power{pw} (no whitening)", "whiten", mode=mode, size=size, p=p, power=pw)
    for src in ("ext", "gallery"):
        for dim in (512, 256):
            for shrink in (0.0, 0.5, 0.9, 1.0):
                for pw in (1.0, 0.5):
                    r.run(f"{tag} PCAw-{src} d{dim} shrink{shrink} power{pw}", "whiten", mode=mode, size=size,
                          p=p, whiten=src, dim=dim, shrink=shrink, power=pw)


def group_rotation(r: Runner, mode="aspect", size=320, p=3):
    tag = f"{mode}{size} p{p}"
    for v in [("rot90", "rot270"), ("rot90", "rot180", "rot270"), ("hflip",), ("rot90", "rot180", "rot270", "hflip")]:
        r.run(f"{tag} db rows +{'+'.join(v)}", "rotation", mode=mode, size=size, p=p, db_variants=v)


def group_regions(r: Runner, mode="aspect", size=320, p=3):
    tag = f"{mode}{size} p{p}"
    for lv in [(2,), (3,), (2, 3)]:
        r.run(f"{tag} db regions L{lv}", "regions", mode=mode, size=size, p=p, db_levels=lv)
        r.run(f"{tag} query regions L{lv}", "regions", mode=mode, size=size, p=p, q_levels=lv)
    r.run(f"{tag} db+query regions L(2,3)", "regions", mode=mode, size=size, p=p, db_levels=(2, 3), q_levels=(2, 3))


def group_qe(r: Runner, mode="aspect", size=320, p=3):
    tag = f"{mode}{size} p{p}"
    for k, a in [(1, 3), (3, 3), (5, 3), (10, 3)]:
        r.run(f"{tag} alpha-QE k{k} a{a}", "qe", mode=mode, size=size, p=p, qe=(k, a))
    for k, a in [(3, 3), (5, 3)]:
        r.run(f"{tag} DBA k{k} a{a}", "qe", mode=mode, size=size, p=p, dba=(k, a))


def group_combo(r: Runner):
    w = dict(mode="aspect", size=320, p=3, whiten="ext", dim=512, shrink=0.5, power=0.5)
    rot = ("rot90", "rot180", "rot270")
    r.run("COMBO A: aspect320 p3 PCAw-ext512 + rot rows", "combo", db_variants=rot, **w)
    r.run("COMBO A + category on upright rows", "combo", db_variants=rot, cat_upright=True, **w)
    r.run("COMBO B: A + hflip row, category upright", "combo", db_variants=rot + ("hflip",), cat_upright=True, **w)
    r.run("COMBO C: A + db regions L2, category upright", "combo", db_variants=rot, db_levels=(2,), cat_upright=True, **w)
    r.run("COMBO D: A + alpha-QE k3 a3, category upright", "combo", db_variants=rot, qe=(3, 3), cat_upright=True, **w)
    r.run("COMBO E: A + DBA k5 a3, category upright", "combo", db_variants=rot, dba=(5, 3), cat_upright=True, **w)
    r.run("COMBO F: A + DBA k5 a3 + QE k3, category upright", "combo", db_variants=rot, dba=(5, 3), qe=(3, 3),
          cat_upright=True, **w)

    ms = dict(w, scales=(224,))
    r.run("COMBO G: 224+320 p3 PCAw-ext512 + rot+hflip rows, cat upright", "combo", db_variants=rot + ("hflip",),
          cat_upright=True, **ms)
    r.run("COMBO H: G + DBA k5 a3", "combo", db_variants=rot + ("hflip",), dba=(5, 3), cat_upright=True, **ms)
    r.run("COMBO I: G + db regions L2", "combo", db_variants=rot + ("hflip",), db_levels=(2,), cat_upright=True, **ms)


GROUPS = dict(pooling=group_pooling, multiscale=group_multiscale, whiten=group_whiten, rotation=group_rotation,
              regions=group_regions, qe=group_qe, combo=group_combo)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", default=".cache/evalset")
    ap.add_argument("--cache", default=".cache/research/fmaps")
    ap.add_argument("--wlist", default=".cache/research/whiten/list.txt", help="whitening image list (extract.py tag)")
    ap.add_argument("--results", default="bench/research/results.jsonl")
    ap.add_argument("--group", nargs="+", default=["pooling"], help=" ".join(GROUPS) + " | all")
    a = ap.parse_args()
    r = Runner(a.set, a.cache, a.wlist, a.results)
    for g in (GROUPS if a.group == ["all"] else a.group):
        GROUPS[g](r)


if __name__ == "__main__":
    main()
