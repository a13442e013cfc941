"""DUS Studio backend: specs, work functions, registry and runner. Never imports streamlit."""
