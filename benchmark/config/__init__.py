"""Configuration: the profile schema (every table's keys, defaults and checks), the profile parser,
named-step recipes, and the shipped profiles (``profiles/*.toml``).

Bottom layer with ``benchmark.data``: may import the package's base modules (errors, formatting,
naming), ``benchmark.data`` and ``zoo`` (to check architecture names); nothing above.
"""
