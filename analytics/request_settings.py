"""Which URL parameters of an HTTP-interface request are the transport's, and which settings a read-only
user may still send (output shape only: never a limit, a resource or anything that writes)."""

from __future__ import annotations

# Parameters the HTTP layer itself reads or answers for; they never reach the engine as settings.
# Sessions (session_id...) are accepted and ignored: every request runs in a fresh server-made session.
TRANSPORT_PARAMS: frozenset[str] = frozenset(
    {
        "query", "database", "default_format", "query_id", "user", "password", "quota_key",
        "session_id", "session_timeout", "session_check", "compress", "decompress", "buffer_size",
        "wait_end_of_query", "role", "client_protocol_version", "enable_http_compression",
        "http_zlib_compression_level", "send_progress_in_http_headers", "http_headers_progress_interval_ms",
        "cancel_http_readonly_queries_on_client_close",
        "http_native_compression_disable_checksumming_on_decompress",
    }
)  # fmt: skip

_HARMLESS_PREFIXES = ("output_format_", "format_", "date_time_output_format", "interval_output_format")
_HARMLESS = frozenset({"date_time_input_format", "cast_string_to_dynamic_use_inference", "extremes"})


def harmless(name: str) -> bool:
    """A setting that changes only how a result is written, so a read-only user may send it."""
    return name in _HARMLESS or name.startswith(_HARMLESS_PREFIXES)


def readonly_refusal(name: str) -> str:
    return (
        f"Code: 164. DB::Exception: Cannot modify '{name}' setting in readonly mode: a read-only user may "
        "set only output format settings (output_format_*, format_*, date_time_output_format). (READONLY)"
    )
