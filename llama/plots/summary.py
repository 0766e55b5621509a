"""summary: the configuration and memory tables beside parameters by component (the
numbers: llama.analysis.model_summary)."""

from __future__ import annotations

from matplotlib.ticker import FuncFormatter

from ..analysis import ModelSummary, human_bytes, human_count
from ._common import Figure, new_figure


def plot_summary(s: ModelSummary) -> Figure:
    """Configuration and memory tables beside a bar chart of parameters by component."""
    fig = new_figure(13, 6.2)
    grid = fig.add_gridspec(2, 2, width_ratios=[1.25, 1], height_ratios=[1.15, 1])
    ax_cfg = fig.add_subplot(grid[:, 0])
    ax_par = fig.add_subplot(grid[0, 1])
    ax_mem = fig.add_subplot(grid[1, 1])
    fig.suptitle(
        f"{s.name}: {human_count(s.total_params)} parameters ({s.total_params:,})",
        fontsize=14,
        fontweight="bold",
    )

    # Left: the configuration as a two-column table, then the tie and memory facts.
    ax_cfg.axis("off")
    rows = [[k, v] for k, v in s.config]
    rows.append(["embedding / output", s.tied])
    for k in s.kv_bytes_per_token:
        short = "fp32" if k == "float32" else "bf16/fp16"
        rows.append([f"KV cache per token, {short}", human_bytes(s.kv_bytes_per_token[k])])
        rows.append([f"KV cache, {s.args.max_seq_len:,} tokens, {short}",
                     human_bytes(s.kv_bytes_full[k])])
    table = ax_cfg.table(cellText=rows, colLabels=["configuration", "value"], loc="upper left",
                         cellLoc="left", colWidths=[0.42, 0.58])
    table.auto_set_font_size(False)
    table.set_fontsize(10)
    table.scale(1, 1.38)
    for (r, _c), cell in table.get_celld().items():
        cell.set_edgecolor("#cccccc")
        if r == 0:
            cell.set_facecolor("#dde6f2")
            cell.set_text_props(fontweight="bold")

    # Top right: parameters by component.
    parts = [p for p in s.params]
    counts = [s.params[p] for p in parts]
    colors = ["#4c72b0", "#dd8452", "#55a868", "#8172b3", "#c44e52", "#937860"]
    bars = ax_par.barh(parts, counts, color=colors[: len(parts)])
    ax_par.invert_yaxis()
    ax_par.set_title("parameters by component")
    ax_par.set_xlabel("parameters")
    top = max(counts) if counts else 1
    for bar, n, part in zip(bars, counts, parts):
        label = "tied (0 extra)" if part == "output" and n == 0 else (
            f"{human_count(n)}  ({100 * n / s.total_params:.1f}%)"
        )
        ax_par.text(bar.get_width() + 0.01 * top, bar.get_y() + bar.get_height() / 2, label,
                    va="center", fontsize=9)
    ax_par.set_xlim(0, top * 1.45)
    ax_par.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: human_count(v)))

    # Bottom right: weight memory in each storage format.
    names = list(s.weight_bytes)
    values = [s.weight_bytes[n] / 2**20 for n in names]
    bars = ax_mem.barh(names, values, color="#7f9fbf")
    ax_mem.invert_yaxis()
    ax_mem.set_title("weight memory by storage format" + (f"  (loaded: {s.loaded})" if s.loaded else ""),
                     fontsize=10)
    ax_mem.set_xlabel("MiB")
    for bar, n in zip(bars, names):
        ax_mem.text(bar.get_width() * 1.01, bar.get_y() + bar.get_height() / 2,
                    human_bytes(s.weight_bytes[n]), va="center", fontsize=9)
    ax_mem.set_xlim(0, max(values) * 1.35)
    return fig


__all__ = ["plot_summary"]
