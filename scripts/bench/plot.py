"""results.json -> results.png: grouped bars per case and server (log scale), requests per
second on the left, MiB/s of the transfers on the right. Runs in a venv with matplotlib.

    python plot.py out/results.json out/results.png
"""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(source: str, target: str) -> None:
    with open(source) as handle:
        data = json.load(handle)
    cases = [case for case in data["meta"]["cases"] if case["kind"] == "wrk"]
    results = {(row["server"], row["case"]): row for row in data["results"]}
    servers = list(dict.fromkeys(row["server"] for row in data["results"]
                                 if row["kind"] == "wrk"))
    groups = [("requests per second", "rps", [c for c in cases if not c["transfer"]]),
              ("MiB per second", "mib_s", [c for c in cases if c["transfer"]])]
    groups = [group for group in groups if group[2]]
    widths = [max(1, len(group[2])) for group in groups]
    figure, axes = plt.subplots(1, len(groups), figsize=(4 + 2.2 * sum(widths), 6),
                                gridspec_kw={"width_ratios": widths}, squeeze=False)
    colours = plt.get_cmap("tab10")
    bar = 0.8 / max(1, len(servers))
    for axis, (label, key, group) in zip(axes[0], groups):
        for index, server in enumerate(servers):
            xs, heights = [], []
            for position, case in enumerate(group):
                row = results.get((server, case["key"]))
                value = row.get(key) if row and row["status"] == "ok" else None
                if value:
                    xs.append(position + (index - (len(servers) - 1) / 2) * bar)
                    heights.append(value)
            axis.bar(xs, heights, bar, label=server, color=colours(index % 10))
        axis.set_yscale("log")
        axis.set_ylabel(label + " (log scale)")
        axis.set_xticks(range(len(group)))
        axis.set_xticklabels([case["title"].replace(", ", "\n", 1) for case in group],
                             fontsize=8)
        axis.grid(axis="y", which="both", alpha=0.3)
    figure.legend(*axes[0][0].get_legend_handles_labels(), loc="lower center",
                  ncol=min(len(servers), 6), fontsize=8, frameon=False)
    meta = data["meta"]
    figure.suptitle(f"hio_http benchmark ({meta['mode']} run, {meta['date']}): server on one "
                    "core, wrk on the other; missing bar = not measured")
    figure.tight_layout(rect=(0, 0.08, 1, 1))
    figure.savefig(target, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
