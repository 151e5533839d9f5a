"""The Lua scripts of producer/lua, as Redis runs them: key functions generated from `producer.keys` first.

Every script gets `keys.lua_prelude()` (K_job, K_index, ...), `line.lua_prelude()` (a queued job's score in
line) and lua/_moved.lua (the side-index helper each status change calls), so a script names keys only through
`KEYS` or those functions. A script may also take helpers: other lua/_*.lua files (`sdq_create` of
lua/_create.lua) and Lua functions defined in a Python module (ratelimit.py's `sdq_gcra` and `sdq_admit`).
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from . import keys, line


@cache
def lua_script(name: str, *, helpers: tuple[str, ...] = (), inline: str = "") -> str:
    """The source of lua/`name`.lua with the key and line preludes and lua/_moved.lua in front, then the helper
    files `helpers` (names of lua/_*.lua, without the extension) and the Lua source `inline`."""
    lua = resources.files(__package__).joinpath("lua")
    prelude = keys.lua_prelude() + line.lua_prelude() + lua.joinpath("_moved.lua").read_text()
    parts = [lua.joinpath(f"{helper}.lua").read_text() for helper in helpers]
    return prelude + "".join(parts) + inline + lua.joinpath(f"{name}.lua").read_text()
