"""The studio's run history: every run of every tab in a local SQLite database (store.py, no Qt)
and the History panel that lists, filters, re-opens and exports them (panel.py)."""
