"""The version of hio_http, in one place (setup.cfg and --version read it)."""

__version__ = "0.1.0"
