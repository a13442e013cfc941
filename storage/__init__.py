"""Persistence for DUS Studio: SQLModel tables (models.py) and the engine / workspace (db.py).

Nothing here imports streamlit: pages, the CLI and the tests share this layer.
"""
