"""envoi: a self-hosted email campaign platform with a first-class statistics engine."""

__version__ = "0.1.0"
