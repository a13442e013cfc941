"""The command line's commands, a module per family; backend/__main__.py is the table of them and `main`.

    python -m backend --help
"""
