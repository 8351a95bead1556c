"""The local driver: ``diartune tune`` runs a tuning's trials as processes on this machine."""
