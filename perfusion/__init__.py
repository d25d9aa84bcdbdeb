"""perfusion: CT perfusion analysis with physics-informed neural fields (ReSPPINN)."""

__version__ = "0.1.0"
