"""The rule engine: rule-file schema and validation, compilation to durable-rules, decisions, tools."""

from rules.engine import AsyncRuleEngine, Decision, DecisionRequest, RuleEngine
from rules.loader import RuleError, RuleFileError, check, load_ruleset, template_names
from rules.schema import Rule, Ruleset
from rules.watch import RulesWatcher

__all__ = [
    "AsyncRuleEngine",
    "Decision",
    "DecisionRequest",
    "Rule",
    "RuleEngine",
    "RuleError",
    "RuleFileError",
    "RulesWatcher",
    "Ruleset",
    "check",
    "load_ruleset",
    "template_names",
]
