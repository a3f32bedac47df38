"""The only place that renders: plotly figures and HTML pages (jinja2 templates in `templates/`, escaped by
`templates.py`), drawn from data the analyses return (never computed here)."""
