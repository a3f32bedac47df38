"""Figures for attention-output SAEs, drawn from interp.analysis.attention's results."""

from __future__ import annotations

import plotly.graph_objects as go
import torch


def head_attribution_figure(contributions: torch.Tensor, latent: int) -> go.Figure:
    """Mean contribution of each head to one latent: contributions [tokens, n_heads]."""
    mean = contributions.mean(0).tolist()
    fig = go.Figure(go.Bar(x=[f"H{h}" for h in range(len(mean))], y=mean))
    fig.update_layout(title=f"Latent {latent}: mean contribution per head", yaxis_title="pre-activation share",
                      template="plotly_white")
    return fig


def head_feature_counts_figure(top: torch.Tensor, n_heads: int) -> go.Figure:
    """How many latents each head drives most: top [n_latents] head indices (from interp.analysis.attention.top_heads)."""
    counts = torch.bincount(top, minlength=n_heads).tolist()
    fig = go.Figure(go.Bar(x=[f"H{h}" for h in range(n_heads)], y=counts))
    fig.update_layout(title="Latents per head (by largest direct attribution)", yaxis_title="latents", template="plotly_white")
    return fig
