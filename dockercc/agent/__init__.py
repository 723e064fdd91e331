"""The dockercc runner that lives inside each agent container (``python -m dockercc.agent``)."""
