"""Plots a soak's samples (bench/results/soak*.json): the gateway's RSS, the broadcast
messages clients received per second, and the connections open at the gateway, over time.
Run through bench/plot-soak.sh, which provides matplotlib."""

import json
import sys

import matplotlib.pyplot as plt


def main(results_path: str, png_path: str) -> None:
    with open(results_path, encoding="utf-8") as f:
        results = json.load(f)
    samples = results["samples"]
    if not samples:
        sys.exit("no samples to plot")
    options = results["options"]
    minutes = [s["t"] / 60 for s in samples]
    churn_end = options["minutes"]

    fig, axes = plt.subplots(3, 1, figsize=(10, 8.5), sharex=True, constrained_layout=True)
    series = [
        ("memory (MiB)", [s["rss_kib"] / 1024 for s in samples], "tab:red"),
        ("deliveries / s", [s["deliveries_per_s"] for s in samples], "tab:blue"),
        ("open connections", [s["open_connections"] for s in samples], "tab:green"),
    ]
    for axis, (label, values, colour) in zip(axes, series):
        axis.plot(minutes, values, color=colour, linewidth=1.2)
        axis.set_ylabel(label)
        axis.set_ylim(bottom=0, top=max(values) * 1.15 or 1)
        axis.grid(True, alpha=0.3)
        axis.axvline(churn_end, color="grey", linestyle="--", linewidth=0.8)

    heap = [s.get("heap_kib") for s in samples]
    if all(h is not None for h in heap):
        axes[0].plot(minutes, [h / 1024 for h in heap], color="tab:purple", linewidth=1.0,
                     linestyle="--", label="heap in use (allocated, not freed)")
        axes[0].plot([], [], color="tab:red", label="RSS")
        axes[0].legend(loc="lower right", fontsize=8)

    rss = results.get("rss")
    if rss:
        middle, end = rss["middle_kib"] / 1024, rss["end_kib"] / 1024
        axes[0].axvspan(0.4 * churn_end, 0.6 * churn_end, color="tab:red", alpha=0.08)
        axes[0].axvspan(0.9 * churn_end, churn_end, color="tab:red", alpha=0.08)
        axes[0].set_title(
            f"median {middle:.1f} MiB at 40-60 %, {end:.1f} MiB in the last 10 % "
            f"({rss['growth'] * 100:+.1f} %)",
            fontsize=9,
            loc="left",
        )
    axes[-1].set_xlabel(
        "minutes since the clients started\n(dashed: churn ends, everyone leaves; "
        "shaded: the RSS windows compared, 40-60 % and the last 10 %)"
    )

    tally = results["clients"]["clients"]["tally"]
    storage = "in-memory store" if options["storage"] == "memory" else "DynamoDB Local"
    fig.suptitle(
        f"wsbridge soak: local gateway, {storage}, {options['clients']:,} clients churning for "
        f"{churn_end:g} min — lost {tally['lost']}, duplicates {tally['duplicates']}, "
        f"rows left {sum_rows(results['rows_left'])}",
        fontsize=11,
    )
    fig.savefig(png_path, dpi=110)


def sum_rows(rows: dict) -> int:
    return sum(rows[kind] for kind in ("connections", "subscriptions", "users", "other"))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: plot_soak.py RESULTS.json OUT.png")
    main(sys.argv[1], sys.argv[2])
