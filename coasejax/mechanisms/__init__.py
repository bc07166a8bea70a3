"""Bargaining mechanisms, by name. Each is a pure ``(Bargain, Terms, key) -> Outcome`` clearing function, registered
with what the engine and the tests need to know of it (:class:`Mechanism`)."""

from typing import Callable, NamedTuple

from coasejax.mechanisms.alternating import alternating
from coasejax.mechanisms.assurance import assurance
from coasejax.mechanisms.base import Bargain, Outcome, Terms
from coasejax.mechanisms.clarke import clarke
from coasejax.mechanisms.lindahl import lindahl
from coasejax.mechanisms.nash import nash


class Mechanism(NamedTuple):
    clear: Callable  # (Bargain, Terms, key) -> Outcome
    budget_balanced: bool  # Σ victims' payments = the emitter's receipts in every bargain (net intake 0)
    strategies: tuple[str, ...] = ("truthful", "shade")  # the scripted advocates defined for it (coasejax.advocates)
    trainable: bool = False  # its reports carry a learning signal for ES in the engine (a price or pledge responds)


REGISTRY = {
    "nash": Mechanism(nash, budget_balanced=True),
    "lindahl": Mechanism(lindahl, budget_balanced=True, strategies=("truthful", "shade", "best_response"),
                         trainable=True),
    "alternating": Mechanism(alternating, budget_balanced=True),
    # the pivot taxes do not cover the emitter's payment
    "clarke": Mechanism(clarke, budget_balanced=False, strategies=("truthful", "shade", "best_response"),
                        trainable=True),
    "assurance": Mechanism(assurance, budget_balanced=True, strategies=("truthful", "shade", "best_response"),
                           trainable=True),
}
#: every protocol a provider may run: the registered mechanisms, and ``none`` (no bargaining)
PROTOCOLS = ("none", *REGISTRY)
MECHANISMS = {name: m.clear for name, m in REGISTRY.items()}


def budget_balanced(protocols) -> bool:
    """Whether every bargaining protocol in ``protocols`` balances its budget (``none`` moves no money)."""
    return all(REGISTRY[p].budget_balanced for p in protocols if p != "none")


__all__ = ["MECHANISMS", "PROTOCOLS", "REGISTRY", "Bargain", "Mechanism", "Outcome", "Terms", "alternating", "assurance",
           "budget_balanced", "clarke", "lindahl", "nash"]
