"""The Overview page's words."""

WORDS = {
    "title": {"zh": "概览", "en": "Overview"},
}
