"""Microcontroller boards as data (boards.json): RAM and flash from their datasheets, and whether a
model fits one given its measured arena and its bytes plus the stated runtime overhead."""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=1)
def _table() -> dict:
    return json.loads((Path(__file__).with_name("boards.json")).read_text())


def boards() -> dict[str, dict]:
    """``{name: {"label", "ram_kb", "flash_kb", "source"}}``."""
    return _table()["boards"]


def overhead() -> dict:
    return _table()["overhead"]


def check_board_options(opts: dict) -> None:
    """``board`` or ``ram_kb``+``flash_kb`` (or neither); refused before any work."""
    from ..errors import UnsupportedCombination
    board, ram, flash = opts.get("board"), opts.get("ram_kb"), opts.get("flash_kb")
    if board and (ram is not None or flash is not None):
        raise UnsupportedCombination("Give --board or --ram-kb/--flash-kb, not both.")
    if board and board not in boards():
        raise UnsupportedCombination(f"Unknown board '{board}'; boards are {', '.join(boards())} "
                                     "(or give --ram-kb N --flash-kb N).")
    if (ram is None) != (flash is None):
        raise UnsupportedCombination("Give both --ram-kb and --flash-kb for a custom board.")
    for v in (ram, flash):
        if v is not None and not float(v) > 0:
            raise UnsupportedCombination(f"--ram-kb and --flash-kb must be positive, not {v}.")


def board_of(opts: dict) -> dict | None:
    """The board the options name (a table entry or a custom one), or None."""
    if opts.get("board"):
        return {"name": opts["board"], **boards()[opts["board"]]}
    if opts.get("ram_kb") is not None:
        return {"name": "custom", "label": f"custom ({opts['ram_kb']:g} KB RAM, {opts['flash_kb']:g} KB flash)",
                "ram_kb": float(opts["ram_kb"]), "flash_kb": float(opts["flash_kb"]), "source": "given by you"}
    return None


def fit(board: dict, arena_bytes: int | None, model_bytes: int) -> dict:
    """RAM: arena + runtime RAM overhead against the board's RAM; flash: model + runtime flash
    overhead against its flash. Headroom in bytes (negative: short by that much). 1 KB = 1024 bytes."""
    o = overhead()
    ram, flash = int(board["ram_kb"] * 1024), int(board["flash_kb"] * 1024)
    ram_need = None if arena_bytes is None else arena_bytes + o["runtime_ram_bytes"]
    flash_need = model_bytes + o["runtime_flash_bytes"]
    return {**board, "ram_bytes": ram, "flash_bytes": flash,
            "runtime_ram_bytes": o["runtime_ram_bytes"], "runtime_flash_bytes": o["runtime_flash_bytes"],
            "overhead_why": o["why"],
            "ram_needed_bytes": ram_need, "flash_needed_bytes": flash_need,
            "fits_ram": None if ram_need is None else ram_need <= ram, "fits_flash": flash_need <= flash,
            "ram_headroom_bytes": None if ram_need is None else ram - ram_need,
            "flash_headroom_bytes": flash - flash_need,
            "fits": bool(ram_need is not None and ram_need <= ram and flash_need <= flash)}
