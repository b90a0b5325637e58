"""Held-out synthetic Dice of a `kerasmuscle retrain` working folder, split by what each sample drew
(realistic or random intensities, narrow or whole-body field), as Markdown table rows.

Usage:
    python scripts/synthetic_split.py runs/l3-synth-v1
"""
import csv, json, statistics as st, sys
run = sys.argv[1]
d = json.load(open(f'{run}/data/dataset.json'))
rec = {c['id']: c['synth_v2'] for c in d['cases']}
rows = list(csv.DictReader(open(f'{run}/run/fold_0/metrics.csv')))
groups = {"all": lambda r: True, "realistic HU": lambda r: not r['random_intensity'], "random intensities": lambda r: r['random_intensity'],
          "narrow field": lambda r: r['narrow_field'], "whole body, realistic HU": lambda r: not r['narrow_field'] and not r['random_intensity']}
for gname, f in groups.items():
    for pp in ("hu", "none"):
        sel = [r for r in rows if f(rec[r['case_id']]) and r['postprocess'] == pp]
        n = len({r['case_id'] for r in sel})
        line = []
        for cls in ("combined","rectus","abdominal_wall","psoas","quadratus","erector_spinae"):
            v = [float(r['dice']) for r in sel if r['class']==cls and r['dice'] not in ('', 'nan')]
            line.append(f"{st.mean(v):.2f} ± {st.stdev(v):.2f}")
        print(f"| {gname} | {'-20..200 HU' if pp=='hu' else 'raw'} | {n} | " + " | ".join(line) + " |")
