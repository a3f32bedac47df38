"""Plotly figures drawn from data the analyses return (never computed here)."""
