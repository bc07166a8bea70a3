"""Bargaining mechanisms, by name. Each is a pure ``(Bargain, Terms, key) -> Outcome`` function."""

from coasejax.mechanisms.alternating import alternating
from coasejax.mechanisms.assurance import assurance
from coasejax.mechanisms.base import Bargain, Outcome, Terms
from coasejax.mechanisms.clarke import clarke
from coasejax.mechanisms.lindahl import lindahl
from coasejax.mechanisms.nash import nash

MECHANISMS = {"nash": nash, "lindahl": lindahl, "alternating": alternating, "clarke": clarke, "assurance": assurance}

__all__ = ["MECHANISMS", "Bargain", "Outcome", "Terms", "alternating", "assurance", "clarke", "lindahl", "nash"]
