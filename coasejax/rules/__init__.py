"""Matryoshkan rule layers: state ⊃ provider ⊃ individual (see :mod:`coasejax.rules.base`)."""

from coasejax.rules.base import FIELDS, Audit, Constraint, Layer, RuleStack, active, constrain, nest, room
from coasejax.rules.individual import INDIVIDUAL, IndividualParams
from coasejax.rules.provider import PROVIDER, ProviderParams
from coasejax.rules.state import STATE, StateParams

#: the default stack every Coase round passes its actions through
RULES = nest(STATE, PROVIDER, INDIVIDUAL)

__all__ = ["FIELDS", "Audit", "Constraint", "Layer", "RuleStack", "active", "constrain", "nest", "room", "RULES",
           "STATE", "StateParams", "PROVIDER", "ProviderParams", "INDIVIDUAL", "IndividualParams"]
