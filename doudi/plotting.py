"""Matplotlib that writes Chinese: one set-up every figure-making caller runs first.

Matplotlib's default font (DejaVu Sans) has no CJK glyphs: every 因病 or 家庭人口数 comes
out as boxes with a "Glyph ... missing from font(s)" warning. `use_cjk_font()` puts the
first installed CJK font behind DejaVu Sans in the font list, so Latin text keeps its
look and each Chinese glyph falls back to the CJK font (matplotlib >= 3.6 falls back
per glyph). matplotlib is imported here only when called: `doudi` stays light.
"""

from __future__ import annotations

import contextlib
import logging

from doudi.errors import UserError

# In order of preference; the set-up installs the first (Debian: fonts-wqy-zenhei).
CJK_FONTS = (
    "WenQuanYi Zen Hei",
    "Noto Sans CJK SC",
    "Noto Sans SC",
    "Source Han Sans SC",
    "SimHei",
    "Microsoft YaHei",
    "PingFang SC",
)
LATIN_FONT = "DejaVu Sans"  # matplotlib's own, always there


def installed_cjk_font() -> str | None:
    """The first of `CJK_FONTS` matplotlib can find, or None. Matplotlib caches its font
    list once (per user): a font installed since is not in it, so on a miss the system's
    font files it does not know yet are added before giving up."""
    from matplotlib import font_manager

    manager = font_manager.fontManager
    found = _first_cjk({f.name for f in manager.ttflist})
    if found is None:
        known = {f.fname for f in manager.ttflist}
        for path in font_manager.findSystemFonts():
            if path not in known:
                with contextlib.suppress(OSError, RuntimeError):  # unreadable font file
                    manager.addfont(path)
        found = _first_cjk({f.name for f in manager.ttflist})
    return found


class _WeightNotice(logging.Filter):
    """Drops matplotlib's notice that the CJK font has no "normal" weight and its medium
    one is used (WenQuanYi Zen Hei has only that one): true, and nothing to act on."""

    def __init__(self, font: str) -> None:
        super().__init__()
        self.font = font

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return not (text.startswith("findfont: Failed to find font weight") and self.font in text)


def _first_cjk(names: set[str]) -> str | None:
    return next((name for name in CJK_FONTS if name in names), None)


def use_cjk_font() -> str:
    """Make matplotlib draw Chinese (and keep its minus sign, which some CJK fonts lack);
    returns the CJK font's name. A machine with none of `CJK_FONTS` is told how to get one."""
    import matplotlib

    font = installed_cjk_font()
    if font is None:
        raise UserError(f"no CJK font for matplotlib (looked for {', '.join(CJK_FONTS)}): "
                        "install one, e.g. `apt-get install fonts-wqy-zenhei`")
    # named families, not the generic "sans-serif": matplotlib falls back per glyph only
    # along the family list itself
    matplotlib.rcParams["font.family"] = [LATIN_FONT, font]
    matplotlib.rcParams["axes.unicode_minus"] = True  # DejaVu Sans has U+2212
    logger = logging.getLogger("matplotlib.font_manager")
    if not any(isinstance(f, _WeightNotice) for f in logger.filters):
        logger.addFilter(_WeightNotice(font))
    return font
