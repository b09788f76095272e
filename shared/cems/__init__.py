"""CEMS: the code shared by every Lambda function, the CLI and the local stack."""

__version__ = "0.1.0"
