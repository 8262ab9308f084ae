"""homeport: a self-hosted developer-infrastructure daemon on Twisted."""

__version__ = "0.1.0"
