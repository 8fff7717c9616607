"""How many labels the reliability model needs to put the spammers lowest: for 20 seeds of the noisy panel
(3 spammers, 1 length-judging, 6 gold labellers; 3 labels per pair), the seeds on which the three lowest
estimated rationalities are the three spammers.

    .venv/bin/python bench/active_experiments/spam_rank.py 400,700,1500
"""

import sys
from rlhf.feedback.labellers import noisy_panel_labels, reliability_report
for n in [int(x) for x in sys.argv[1].split(",")]:
    ok = 0
    for seed in range(20):
        _, rows = noisy_panel_labels(seed, n)
        rep = reliability_report(rows)
        kinds = {r["labeller_id"]: r["kind"] for r in rows}
        low = sorted(rep["labellers"], key=lambda x: x["rationality"])[:3]
        ok += all(kinds[x["labeller_id"]] == "spammer" for x in low)
    print(n, ok, "/ 20", flush=True)
