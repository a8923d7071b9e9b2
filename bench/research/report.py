#!/usr/bin/env python3
"""Render results.jsonl (written by experiments.py) as the Markdown table in RESULTS.md.

    /tmp/exportvenv/bin/python bench/research/report.py [--results bench/research/results.jsonl] [--out -]
Prints the table; with --out FILE it replaces the text between the table markers in FILE.
"""
from __future__ import annotations

import argparse
import json

ABBR = {"jpeg_q15": "jpg15", "scale_0.25": "sc.25", "stretch_1.5x": "str", "crop_center_50": "cc50",
        "crop_random_30": "cr30", "rot_90": "r90", "rot_15": "r15", "hflip": "flip", "colour_shift": "col",
        "grayscale": "gray", "blur_r3": "blur", "border_text": "bord", "embed_in_canvas": "canv",
        "combo_crop_scale_rot_jpeg": "combo"}
BEGIN, END = "<!-- table:begin -->", "<!-- table:end -->"


def table(rows: list[dict]) -> str:
    edits = list(rows[0]["copy"])
    head = ["group", "recipe", "mean", "min"] + [ABBR.get(e, e) for e in edits] + \
           ["cat mAP", "P@10", "dim", "db rows/img", "q rows", "fwd/q", "fwd/db img"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["group"], r["name"], f"**{r['copy_mean']:.3f}**", f"{r['copy_min']:.3f}"] + \
                [f"{r['copy'][e]:.3f}" for e in edits] + \
                [f"**{r['cat_map']:.3f}**", f"{r['cat_p10']:.3f}", str(r["dim"]), f"{r['db_rows']:g}",
                 f"{r['q_rows']:g}", str(r["fwd_query"]), str(r["fwd_db"])]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--results", default="bench/research/results.jsonl")
    ap.add_argument("--out", default="-")
    a = ap.parse_args()
    latest = {}
    for line in open(a.results):
        r = json.loads(line)
        latest.pop(r["name"], None)
        latest[r["name"]] = r  # latest wins, kept in run order
    t = table(list(latest.values()))
    if a.out == "-":
        print(t)
        return
    text = open(a.out).read()
    i, j = text.index(BEGIN) + len(BEGIN), text.index(END)
    open(a.out, "w").write(text[:i] + "\n" + t + "\n" + text[j:])


if __name__ == "__main__":
    main()
