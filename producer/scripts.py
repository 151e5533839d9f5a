"""The Lua scripts of producer/lua, as Redis runs them: key functions generated from `producer.keys` first.

Every script gets `keys.lua_prelude()` (K_job, K_index, ...) and lua/_moved.lua (the side-index helper each
status change calls), so a script names keys only through `KEYS` or those functions.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from . import keys


@cache
def lua_script(name: str) -> str:
    """The source of lua/`name`.lua with the key prelude and lua/_moved.lua in front."""
    lua = resources.files(__package__).joinpath("lua")
    return keys.lua_prelude() + lua.joinpath("_moved.lua").read_text() + lua.joinpath(f"{name}.lua").read_text()
