"""face-emotion: facial emotion recognition you can train on your own labelled photos."""

__version__ = "0.1.0"
