"""Local peers that speak real providers' HTTP APIs, for the tests, the demo and the benchmarks.

Each module serves one provider's API on loopback as an aiohttp app: it checks the request signature
or token exactly as the provider does and answers with the provider's real success and error bodies.
"""
