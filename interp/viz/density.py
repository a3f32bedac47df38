"""Histogram of latent firing densities on a log10 scale (dead latents counted apart)."""

from __future__ import annotations

from pathlib import Path

import plotly.graph_objects as go
import torch

from interp.viz.text import plot_label


def density_histogram(density: torch.Tensor, title: str = "Latent density") -> go.Figure:
    """density [d_dict]: fraction of tokens on which each latent fires; `title` is shown as text (`plot_label`)."""
    alive = density[density > 0]
    dead = int((density == 0).sum())
    fig = go.Figure(go.Histogram(x=alive.log10().tolist(), nbinsx=60, name="alive latents"))
    fig.update_layout(
        title=f"{plot_label(title)} ({dead} of {len(density)} latents never fired)",
        xaxis_title="log10(firing density)", yaxis_title="latents", bargap=0.02, template="plotly_white",
    )
    return fig


def write_density_page(path: str | Path, density: torch.Tensor, title: str = "Latent density") -> Path:
    """Write the histogram of `density` [d_dict] as a self-contained page (plotly.js inlined) at `path`."""
    density_histogram(density, title=title).write_html(path, include_plotlyjs=True)
    return Path(path)
