"""The rule engine: rule-file schema and validation, compilation to durable-rules, decisions."""

from rules.engine import AsyncRuleEngine, Decision, DecisionRequest, RuleEngine
from rules.loader import RuleError, RuleFileError, check, load_ruleset
from rules.schema import Rule, Ruleset

__all__ = [
    "AsyncRuleEngine",
    "Decision",
    "DecisionRequest",
    "Rule",
    "RuleEngine",
    "RuleError",
    "RuleFileError",
    "Ruleset",
    "check",
    "load_ruleset",
]
