"""Histogram of latent firing densities on a log10 scale (dead latents counted apart)."""

from __future__ import annotations

import plotly.graph_objects as go
import torch


def density_histogram(density: torch.Tensor, title: str = "Latent density") -> go.Figure:
    """density [d_dict]: fraction of tokens on which each latent fires."""
    alive = density[density > 0]
    dead = int((density == 0).sum())
    fig = go.Figure(go.Histogram(x=alive.log10().tolist(), nbinsx=60, name="alive latents"))
    fig.update_layout(
        title=f"{title} ({dead} of {len(density)} latents never fired)",
        xaxis_title="log10(firing density)", yaxis_title="latents", bargap=0.02, template="plotly_white",
    )
    return fig
