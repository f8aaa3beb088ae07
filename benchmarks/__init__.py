"""Side-by-side benchmarks of mpt_async, raw httpx/aiohttp and the qianfan SDK.

Run ``python -m benchmarks`` (or ``nox -s bench``); see ``benchmarks/README.md``.
"""
