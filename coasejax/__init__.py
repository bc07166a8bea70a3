"""coasejax: population-scale Coasean bargaining among AI advocate agents, in JAX."""

__version__ = "0.1.0"
