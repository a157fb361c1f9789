"""A procedural generator of 16×16 pixel-art sprites in the course's five classes.

The course trains on a fixed file of sprites; this module makes an unlimited, reproducible
stand-in with the same layout: images (n, 16, 16, 3) uint8 and one-hot labels (n, 5) float32,
in the class order of ``CLASS_NAMES``.

How a sprite is made:
1. Each *archetype* (a slime, an apple, a knight, ...) is drawn as small ASCII grids, one
   character per pixel. Lowercase letters are colour *roles* ('h' hair, 's' skin, ...), the
   uppercase letter is the same role one shade darker, '.' is background, '+' a white shine.
   An archetype lists alternative parts (heads, bodies, tops) and optional accessories
   (capes, plumes, leaves, ...); every combination, plain and mirrored, is a *variant*.
2. At import every variant is rendered once into a 16×16 grid of palette indices: lower/right
   edges get an automatic shade (light from the top left) and every background pixel that
   touches the shape becomes a 1 px outline in a dark tone of the colour it touches.
3. ``make_sprites`` draws, for the whole batch at once, an archetype, a variant, a ±1 px shift,
   a light background and one colour per role (from per-archetype lists, plus a small integer
   jitter), then turns index grids into RGB with one fancy-indexing lookup. Only integer
   arithmetic touches pixels, so a seed gives the same bytes on every machine (for a given
   NumPy version, whose ``Generator`` streams are what the seed fixes).
"""

from __future__ import annotations

import itertools

import numpy as np
import torch

from .errors import BadInput
from .memory import check_memory
from .checks import whole_number

__all__ = ["GENERATOR_VERSION", "CLASS_NAMES", "ARCHETYPES", "make_sprites", "sprite_sheet", "sprites_to_tensor",
           "tensor_to_sprites"]

GENERATOR_VERSION = "1"  # bump whenever the bytes make_sprites returns for a seed change
CLASS_NAMES = ("hero", "non-hero", "food", "spell", "side-facing")
SIZE = 16

# ---------------------------------------------------------------------------------------------
# Colour roles. Each role has default colour choices (hex RGB); archetypes may override them.
# Index codes in a rendered grid: 0 = background, then per role i: 1+3i fill, 2+3i shade,
# 3+3i outline, so one (n, 1 + 3·roles, 3) palette turns grids into pixels.
# ---------------------------------------------------------------------------------------------
_DEFAULT_COLOURS = {
    "h": "2a2024 5a3520 8c5228 e8c050 c8502a d8d8e0 4060c0 e070a8",  # hair
    "s": "ffdcb4 f0be96 d09060 9c6440 6c4430",  # skin
    "e": "281e30",  # eyes and dark details
    "t": "d03838 3060d0 38a048 8040b0 e08020 20a0a0 e0c040",  # shirt / tunic / dress
    "p": "304070 6a4a30 505058 282830 3c6030 a08050",  # pants
    "b": "704020 4a3020 302828",  # belt, leather
    "k": "5a3a20 2a2428 802828",  # boots
    "g": "f0c838 ffd860 e0a830",  # gold
    "m": "b8c0cc d0d4dc 9098a8",  # metal
    "c": "c02828 7030a0 2848a8 2c8a3c 283048 e07020 c04080",  # cloth: hats, capes, robes
    "a": "e06060",  # main body colour (always overridden)
    "d": "f0e0c0",  # second body colour
    "l": "58b040 3c8c3c 88c048",  # leaf green
    "r": "8a5a2c 6a4424 a87038",  # wood, stems
    "f": "f88c28 f05a1e 5aa0ff 78e05a be64ff",  # flame
    "x": "e03048 3c78f0 30c060 a040e0 f060b0 30d0e0 f0d030",  # magic: gems, liquids
    "y": "fff080 fff8c0",  # glow
    "w": "f8f8f0 ece4d0 e0e8f0",  # white, bone, glass
    "+": "ffffff",  # shine (never shaded, never outlined)
    "*": "f0c030 40c0f0 f060c0 a070f0",  # sparkle (drawn on the background, no outline)
}
ROLES = "".join(_DEFAULT_COLOURS)
_NO_SHADE = set("se+*")  # roles the automatic shading leaves alone (faces stay clean)
_NO_OUTLINE = set("+*")  # roles that never cast an outline
_BACKGROUNDS = "fafaf4 eef4fc fcf0f0 f0faf0 fcf8e8 f4f0fc"  # light, varied per sprite
_JITTER = 8  # ± per channel, integer, so two sprites rarely share exact colours

# character -> grid code ('.' background; '_' in accessories means "leave as is")
_CODE = {".": 0}
for _i, _ch in enumerate(ROLES):
    _CODE[_ch] = 1 + 3 * _i
    if _ch.isalpha():
        _CODE[_ch.upper()] = 2 + 3 * _i


def _t(text: str) -> tuple[str, ...]:
    """A template written as a multi-line string -> tuple of its rows."""
    return tuple(line.strip() for line in text.strip().splitlines())


def _sheet(text: str) -> list[tuple[str, ...]]:
    """Templates drawn side by side, separated by spaces -> one tuple of rows per template.
    (Rows of '.' only at the top or bottom are trimmed when a sprite is rendered, so a short
    template may be padded with them to line up with its neighbours.)"""
    rows = [line.split() for line in text.strip().splitlines()]
    if len({len(r) for r in rows}) != 1:
        raise AssertionError(f"template sheet rows differ in count: {rows}")
    return [tuple(col) for col in zip(*rows)]


# ---------------------------------------------------------------------------------------------
# Templates. Humanoids are a head (8 rows) over a body (6 rows), both 12 wide, so heads and
# bodies combine freely and eyes always sit at the same place (rows 5-6). Side-facing ones look
# right (their mirrored variants look left): one eye, a nose that sticks out, the back of the
# head on the left, one arm, legs apart in a stride. Letters are the roles of _DEFAULT_COLOURS
# (uppercase: shaded), '.' is background, '+' a white shine.
# ---------------------------------------------------------------------------------------------
HEAD_SHORT, HEAD_SPIKY, HEAD_CAP, HEAD_HELMET = _sheet("""
...hhhhhh...  .h.hh..hh.h.  ............  ............
..hhhhhhhh..  .hhhhhhhhhh.  ...cccccc...  ...mmmmmm...
.hhhhhhhhhh.  hhhhhhhhhhhh  ..cccggccc..  ..mmmmmmmm..
.hhsshhsshh.  hhshhsshhshh  .cccccccccc.  .mmmmmmmmmm.
.hssssssssh.  .hssssssssh.  CCCCCCCCCCCC  .mmssssssmm.
.hssessessh.  .hssessessh.  .hssessessh.  .mmsessesmm.
.hssessessh.  .hssessessh.  .hssessessh.  .mmsessesmm.
..ssssssss..  ..ssssssss..  ..ssssssss..  ..mmssssmm..
""")
HEAD_WIZARD, HEAD_LONG, HEAD_HOOD, HEAD_KING = _sheet("""
.....cc.....  ............  ...cccccc...  ..g.g..g.g..
....cccc....  ...hhhhhh...  ..cccccccc..  ..gxggggxg..
...cccccc...  .hhhhhhhhhh.  .cccccccccc.  .hhhhhhhhhh.
..gggggggg..  hhhsshhsshhh  .cccccccccc.  .hhsshhsshh.
cccccccccccc  hhsssssssshh  .ccsssssscc.  .hssssssssh.
.hssessessh.  hhssessesshh  .ccsessescc.  .hssessessh.
.hssessessh.  hhssessesshh  .ccsessescc.  .hssessessh.
..hwwwwwwh..  hhhsssssshhh  ..ccsssscc..  ..hhhhhhhh..
""")
BODY_TUNIC, BODY_ARMOUR, BODY_ROBE, BODY_DRESS, BODY_ROYAL = _sheet("""
..tttttttt..  ..mmmmmmmm..  ..cwwwwwwc..  .htttttttth.  ..hhhhhhhh..
.tttttttttt.  .mmmccccmmm.  .cccwwwwccc.  .tttttttttt.  .tttthhtttt.
.stttttttts.  .smmccccmms.  .scccwwcccs.  .stttttttts.  .stttttttts.
..bbbggbbb..  ..bbbggbbb..  ..cggggggc..  ..tggggggt..  ..bbbggbbb..
..ppp..ppp..  ..mmm..mmm..  .cccccccccc.  .tttttttttt.  ..ppp..ppp..
..kkk..kkk..  ..kkk..kkk..  ..kkk..kkk..  tttttttttttt  ..kkk..kkk..
""")
SIDE_SHORT, SIDE_SPIKY, SIDE_CAP, SIDE_HELMET = _sheet("""
...hhhhh....  .h.hh.h.....  ............  ............
..hhhhhhhh..  ..hhhhhhhh..  ...cccccc...  ..mmmmmm....
.hhhhhhhhhh.  hhhhhhhhhhh.  ..cccccccc..  .mmmmmmmmm..
.hhhhhhhhhh.  .hhhhhhhhhs.  .ccccccccccc  .mmmmmmmmmm.
.hhhhhsssss.  hhhhhhsssss.  .hhhhhsssss.  .mmmmmsssss.
.hhhSsssess.  .hhhSsssess.  .hhhSsssess.  .mmmMsssess.
.hhhssssesss  .hhhssssesss  .hhhssssesss  .mmmmsssesss
..hhhsssss..  ..hhsssss...  ..hhhsssss..  ..mmmmsss...
""")
SIDE_WIZARD, SIDE_PONY, SIDE_HOOD, SIDE_LONG = _sheet("""
.cc.........  ...hhhhh....  ...cccccc...  ............
..cccc......  ..hhhhhhhh..  ..cccccccc..  ...hhhhh....
...ccccc....  .chhhhhhhhh.  .cccccccccc.  ..hhhhhhhh..
..gggggggg..  hhhhhhhhhhh.  .ccccccccccc  .hhhhhhhhhh.
cccccccccccc  hh.hhhsssss.  .cccccsssss.  hhhhhhsssss.
.hhhsssess..  hh.hSsssess.  .cccccssess.  hhhhSsssess.
.hhhsssesss.  h..hssssesss  .cccccssesss  hhhhssssesss
..hhwwwwww..  ....hssss...  ..ccccssss..  hhhhhsssss..
""")
SIDE_TUNIC, SIDE_ARMOUR, SIDE_ROBE, SIDE_DRESS = _sheet("""
....tttt....  ....mmmm....  ...cwwww....  hhhhtttt....
...ttTtt....  ...mmMmm....  ...ccwwc....  hhhttTtt....
...ttTtts...  ...mmMmms...  ...cCccs....  .hhttTtts...
...bbbbb....  ...bbbbb....  ...ccccc....  ...tgggt....
..pp...pp...  ..mm...mm...  ..ccccccc...  ..ttttttt...
.kkk...kkk..  .kkk...kkk..  .kk....kkk..  .ttttttttt..
""")
SLIME, GHOST, MUSHROOM, BEETLE = _sheet("""
............  ...aaaaaa...  ....aaaa....  ...e....e...
............  ..aaaaaaaa..  ..aawwaaaa..  ....e..e....
....aaaa....  .aaaaaaaaaa.  .aawwaaaawa.  ....dddd....
..aaaaaaaa..  .aeeaaaaeea.  .aaaaaaaaaa.  ...dxddxd...
.aa++aaaaaa.  .aeeaaaaeea.  aaaaaaawwaaa  e..aaaaaa..e
.a++aaaaaaa.  aaaaaaaaaaaa  awwaaaawwaaa  .eaaaAaaaae.
aaaaaaaaaaaa  aaaaaeeaaaaa  .AAAAAAAAAA.  ..aa+Aaaaa..
aaaeaaaaeaaa  .aaaaeeaaaa.  ...dddddd...  eaaaaAaaaaae
aaaeaaaaeaaa  .aaaaaaaaaa.  ...dedded...  .aaaaAaaaaa.
aaaaaaaaaaaa  .aaaaaaaaaa.  ...dedded...  ..aaaAaaaa..
.AAAAAAAAAA.  .aa.aaaa.aa.  ...dddddd...  .e.aaAaaa.e.
............  .a...aa...a.  ...dd..dd...  ....aaaa....
""")
BAT, SPIDER, SKELETON, EYEBALL = _sheet("""
a............a  ....a....a....  ...wwwwww...  ...aaaaaa...
aa..a....a..aa  .....aaaa.....  ..wwwwwwww..  ..aaaaaaaa..
aaa.aaaaaa.aaa  .a..aaaaaa..a.  ..weewweew..  .aawwwwwwaa.
aaaaaxaaxaaaaa  a.aaaaaaaaaa.a  ..weewweew..  .awwxxxxwwa.
aaaaaaaaaaaaaa  ..axaxaaxaxa..  ..wwweewww..  awwxx+exxwwa
aa.aawaawaa.aa  .aaaaaaaaaaaa.  ...wwwwww...  awwxxeexxwwa
a...aaaaaa...a  a.aaaaaaaaaa.a  .....ww.....  .awwxxxxwwa.
.....aaaa.....  ..a.aaaaaa.a..  .wwwwwwwwww.  .aawwwwwwaa.
..............  .a..w....w..a.  .w...ww...w.  ..aaaaaaaa..
..............  ..............  .w.wwwwww.w.  .a.a.aa.a.a.
..............  ..............  .w...ww...w.  a..a.aa.a..a
..............  ..............  ...wwwwww...  ............
..............  ..............  ...ww..ww...  ............
..............  ..............  ..www..www..  ............
""")
APPLE, CHERRIES, GRAPES, CARROT = _sheet("""
......r.....  ........ll...  .....r.....  ..l.l.l..
......r.....  .......rll...  .....rlll..  ..lllll..
..aaaarraa..  ......r.r....  .aaaaaaaa..  ...lll...
.aa+aaaaaaa.  .....r...r...  .a+AaaAaA..  ..aaaaa..
.a++aaaaaaa.  ....r....r...  .aAaa+aaaa.  .aaaaaaa.
aa+aaaaaaaaa  ...r......r..  ..aaAaaAa..  .aAaaaaa.
aaaaaaaaaaaa  .aaaa...aaaa.  ..a+aaAaa..  .aaaaaAa.
aaaaaaaaaaaa  aa+aaa.aa+aaa  ...aaAaa...  ..aaaaa..
.aaaaaaaaaa.  a++aaa.a++aaa  ...a+aaa...  ..aAaaa..
.aaaaaaaaaa.  aaaaaa.aaaaaa  ....aAa....  ..aaaaa..
..aaaaaaaa..  aaaaaa.aaaaaa  ....aa.....  ...aaAa..
...aa..aa...  .aaaa...aaaa.  ...........  ...aaa...
............  .............  ...........  ....aa...
............  .............  ...........  ....a....
""")
BANANA, WATERMELON, BREAD, DRUMSTICK = _sheet("""
...........r.  aaaaaaaaaaaaaa  ....aaaaa....  ..aaaaa.......
..........aa.  waaeaaaaaaeaaw  ..aaaaaaaaa..  .aaaaaaa......
..........aaa  lwaaaaeaaaaawl  .aaAaaaAaaaa.  aa+aaaaaa.....
.........aaaa  .lwaeaaaaeawl.  aaaaAaaaAaaAa  a++aaaaaaa....
........aaaaA  ..lwaaaaaawl..  aaaaaaaaaaaaa  aaaaaaaaaa....
r......aaaaA.  ...llwwwwll...  ddddddddddddd  aaaaaaaaaa....
aaaaaaaaaaAA.  .....llll.....  .ddddddddddd.  .aaaaaaaaa....
.aaaaaaaaAA..  ..............  .............  ..aaaaaaaa....
..AAAAAAAA...  ..............  .............  ....aaaaaw....
.............  ..............  .............  .........ww...
.............  ..............  .............  ..........ww.w
.............  ..............  .............  ...........www
.............  ..............  .............  ..........www.
.............  ..............  .............  ...........w..
""")
POTION, VIAL, SWORD, STAFF = _sheet("""
....rr....  ...rrrr...  ...........mm.  .......g.g..
...rrrr...  ...rrrr...  ..........m+m.  ......gxxxg.
...wwww...  ..wwwwww..  .........m+m..  ......x+xxx.
....ww....  ...wwww...  ........m+m...  ......xxxxx.
....ww....  ...w+ww...  .......m+m....  .......xxx..
..wwwwww..  ...wxxw...  ..g...m+m.....  .......gg...
.ww+wwwww.  ...w+xw...  ...g.m+m......  ......rr....
wxxxxxxxxw  ...wxxw...  ....gmm.......  ......rr....
wx+xxxxxxw  ...wxxw...  ....ggg.......  .....rr.....
wxxxxxxxxw  ...wxxw...  ...rr.gg......  .....rr.....
wxxxxxxxxw  ...wxxw...  ..rr....g.....  ....rr......
.wxxxxxxw.  ....ww....  .rr...........  ....rr......
..wwwwww..  ..........  gg............  ...rr.......
..........  ..........  gg............  ...rr.......
""")
GEM, FIREBALL, SCROLL, BOOK, WAND = _sheet("""
...xxxxxx...  f..f........  .dddddddddd.  .cccccccccc.  .......y....
..x+xxxxXx..  .ff.f.......  dDddddddddDd  ccccccccccwc  .......y....
.x++xxxxXXx.  f.fff.f.....  .wwwwwwwwww.  ccccggccccwc  ....yyyyyyy.
XXXXXXXXXXXX  .ffffff.....  .wWWWWWWWww.  cccgxxgcccwc  .....yy+yy..
.xx+xxxxXXx.  ..fffffff...  .wwwwwwwwww.  ccgxx+xgccwc  ......yyy...
..xxxxxxXX..  ..ffffyyff..  .wWWWWWwwww.  cccgxxgcccwc  .....yyyyy..
...xxxxXX...  ...ffyyyyff.  .wwwwwwwwww.  ccccggccccwc  ....ryy.yy..
....xxXX....  ...fyyy++yf.  .wWWWWWWWww.  ccccccccccwc  ...rr.......
.....xX.....  ....fyyy+yf.  .wwwwwwwwww.  ccccccccccwc  ..rr........
............  ....ffyyyyf.  dDddddddddDd  CCCCCCCCCCwc  .rr.........
............  .....ffyff..  .dddddddddd.  .wwwwwwwwwwc  rr..........
............  ......fff...  ............  ..CCCCCCCCCC  ............
""")
HEAD_MASK = HEAD_HOOD[:7] + ("..cccccccc..",)  # a ninja: the hood with a mask over the mouth
SIDE_MASK = SIDE_HOOD[:6] + (".ccccccccccc", "..cccccccc..")

# Accessories: (row, col, rows) painted over a composed template; '_' keeps what is below.
CAPE = (8, 0, _t("""
.c________c.
c__________c
c__________c
cc________cc
cc________cc
.c________c."""))
SIDE_CAPE = (8, 0, _t("""
.cc
cc_
cc_
cc_
.cc"""))
PLUME, SIDE_PLUME = (0, 5, ("cc",)), (0, 1, ("cc",))
CROWN = (0, 2, ("g.g..g.g", "gggggggg"))
SLIME_CROWN = (1, 2, CROWN[2])
SIDE_CROWN = (0, 3, ("g.g.g", "ggggg"))
BOWS = (0, 1, ("cc______cc", "_cc____cc_"))
SIDE_BOW = (1, 1, ("cc", "cc"))
LEAF = (0, 7, ("_ll", "lll"))
SEAL = (8, 7, ("xx", "xx"))
# Spells twinkle: plus-shaped sparkles at these canvas positions, on free background only.
SPARKLES = (((2, 2), (12, 13)), ((2, 13), (13, 2)), ((13, 13), (1, 6)))


def _arch(cls, name, slots, extras=(), colours=None, sparkles=False):
    """One archetype: `slots` are stacked top to bottom, each a list of alternative parts;
    `extras` are groups of alternative accessories (None = no accessory)."""
    return dict(cls=CLASS_NAMES.index(cls), name=name, slots=slots, extras=extras,
                colours=colours or {}, sparkles=sparkles)


# Colour lists shared by a front and a side archetype.
_NINJA = {"c": "283048 2a2428 5a2a60 802828", "t": "283048 2a2428 404050", "p": "2a2428 404050"}
_RANGER = {"c": "2c8a3c 3c6030 6a4a30", "t": "3c6030 6a4a30 58a048"}
_GOWN = {"t": "f080b0 b070e0 70b0f0 f0f0f8 f0d050"}
_OLD = {"h": "d8d8e0 a0a0a8 8c5228"}  # wizards' hair and beards

_HEROES = [
    _arch("hero", "villager", [[HEAD_SHORT, HEAD_SPIKY, HEAD_CAP], [BODY_TUNIC]], [[None, CAPE]]),
    _arch("hero", "knight", [[HEAD_HELMET], [BODY_ARMOUR]], [[None, PLUME], [None, CAPE]]),
    _arch("hero", "wizard", [[HEAD_WIZARD], [BODY_ROBE]], colours=_OLD),
    _arch("hero", "princess", [[HEAD_LONG], [BODY_DRESS]], [[CROWN, BOWS]],
          colours=_GOWN),
    _arch("hero", "ninja", [[HEAD_MASK], [BODY_TUNIC]],
          colours=_NINJA),
    _arch("hero", "ranger", [[HEAD_HOOD], [BODY_TUNIC]], [[None, CAPE]],
          colours=_RANGER),
    _arch("hero", "king", [[HEAD_KING], [BODY_ROYAL]], [[CAPE]],
          colours={"c": "c02828 7030a0 2848a8", "t": "c02828 7030a0 2848a8 f0f0f8"}),
]
_SIDES = [
    _arch("side-facing", "walker", [[SIDE_SHORT, SIDE_SPIKY, SIDE_CAP], [SIDE_TUNIC]],
          [[None, SIDE_CAPE]]),
    _arch("side-facing", "side knight", [[SIDE_HELMET], [SIDE_ARMOUR]],
          [[None, SIDE_PLUME], [None, SIDE_CAPE]]),
    _arch("side-facing", "side wizard", [[SIDE_WIZARD], [SIDE_ROBE]], colours=_OLD),
    _arch("side-facing", "ponytail", [[SIDE_PONY], [SIDE_TUNIC]]),
    _arch("side-facing", "side ranger", [[SIDE_HOOD], [SIDE_TUNIC]], [[None, SIDE_CAPE]],
          colours=_RANGER),
    _arch("side-facing", "side princess", [[SIDE_LONG], [SIDE_DRESS]], [[SIDE_CROWN, SIDE_BOW]],
          colours=_GOWN),
    _arch("side-facing", "side ninja", [[SIDE_MASK], [SIDE_TUNIC]],
          colours=_NINJA),
]
_CREATURES = [
    _arch("non-hero", "slime", [[SLIME]], [[None, SLIME_CROWN]],
          colours={"a": "60c850 4aa0f0 f070b0 b070e0 f0a040"}),
    _arch("non-hero", "ghost", [[GHOST]], colours={"a": "f4f6ff e8e0ff e0ffe8 d8ecff"}),
    _arch("non-hero", "bat", [[BAT]],
          colours={"a": "5a4070 404050 6a3a2a 402848", "x": "f03030 f0d030"}),
    _arch("non-hero", "skeleton", [[SKELETON]], colours={"w": "f0ece0 e0dccc d8d8d0"}),
    _arch("non-hero", "mushroom", [[MUSHROOM]], colours={"a": "e03030 c04080 e07020 4a70d0"}),
    _arch("non-hero", "spider", [[SPIDER]],
          colours={"a": "3a3040 5a3a60 703020 404850", "x": "f03030 50f050"}),
    _arch("non-hero", "beetle", [[BEETLE]],
          colours={"a": "30a050 3060d0 c03030 a040c0", "d": "404050 2a2428"}),
    _arch("non-hero", "eyeball", [[EYEBALL]], colours={"a": "c04080 7030a0 30a080 e07020"}),
]
_FOODS = [
    _arch("food", "apple", [[APPLE]], [[None, LEAF]], colours={"a": "e03030 c81e3c 78c83c f0d040"}),
    _arch("food", "cherries", [[CHERRIES]], colours={"a": "e02030 c01840 f04060"}),
    _arch("food", "carrot", [[CARROT]], colours={"a": "f08020 f09830 e06818"}),
    _arch("food", "grapes", [[GRAPES]], colours={"a": "8040b0 6a3090 90c040 8a2850"}),
    _arch("food", "banana", [[BANANA]], colours={"a": "f8d838 f0e060 e8c828"}),
    _arch("food", "watermelon", [[WATERMELON]], colours={"a": "f04050 f06070 e83040"}),
    _arch("food", "bread", [[BREAD]], colours={"a": "c88838 b87430 d89848", "d": "f0d090 e8c080"}),
    _arch("food", "drumstick", [[DRUMSTICK]], colours={"a": "b06030 a05028 c87840"}),
]
_SPELLS = [
    _arch("spell", "potion", [[POTION, VIAL]], sparkles=True,
          colours={"w": "e0f0f8 f0f0f0 d8e8f0"}),
    _arch("spell", "sword", [[SWORD]], sparkles=True),
    _arch("spell", "staff", [[STAFF]], sparkles=True),
    _arch("spell", "gem", [[GEM]], sparkles=True),
    _arch("spell", "fireball", [[FIREBALL]], sparkles=True),
    _arch("spell", "scroll", [[SCROLL]], [[None, SEAL]], sparkles=True,
          colours={"w": "f8f0d8 f0e8c8", "d": "d8b880 c8a870"}),
    _arch("spell", "spellbook", [[BOOK]], sparkles=True,
          colours={"c": "7030a0 2848a8 c02828 2c8a3c 283048"}),
    _arch("spell", "wand", [[WAND]], sparkles=True),
]
ARCHETYPES = _HEROES + _CREATURES + _FOODS + _SPELLS + _SIDES


# ---------------------------------------------------------------------------------------------
# Rendering templates into index grids (done once, at import).
# ---------------------------------------------------------------------------------------------
def _compose(slots_choice, extras_choice) -> list[list[str]]:
    """Stack the chosen parts and paint the chosen accessories over them -> character rows."""
    rows = [list(line) for part in slots_choice for line in part]
    width = max(len(r) for r in rows)
    if any(len(r) != width for r in rows):
        raise AssertionError(f"ragged template rows: {[''.join(r) for r in rows]}")
    for extra in extras_choice:
        if extra is None:
            continue
        top, left, patch = extra
        for dr, line in enumerate(patch):
            for dc, ch in enumerate(line):
                if ch != "_":
                    rows[top + dr][left + dc] = ch
    while set(rows[0]) == {"."}:  # trim empty rows so the sprite is centred by its content
        rows.pop(0)
    while set(rows[-1]) == {"."}:
        rows.pop()
    return rows


def _neighbours(grid: np.ndarray, outside: int = 0):
    """(up, down, left, right) neighbour values of every pixel; `outside` beyond the edge."""
    p = np.pad(grid, 1, constant_values=outside)
    return p[:-2, 1:-1], p[2:, 1:-1], p[1:-1, :-2], p[1:-1, 2:]


def _render(rows, sparkles=()) -> np.ndarray:
    """Character rows -> (16, 16) int16 grid of palette indices, shaded and outlined."""
    h, w = len(rows), len(rows[0])
    if h > SIZE - 2 or w > SIZE - 2:  # the outline needs a free pixel on every side
        raise AssertionError(f"template {h}x{w} is larger than {SIZE - 2}x{SIZE - 2}")
    grid = np.zeros((SIZE, SIZE), np.int16)
    top, left = (SIZE - h) // 2, (SIZE - w) // 2
    grid[top:top + h, left:left + w] = [[_CODE[ch] for ch in row] for row in rows]

    # Shade: a fill pixel at the lower (right) edge of a run of its own colour gets darker,
    # as if lit from the top left. 1 px lines are left alone so thin details keep their colour.
    role = (grid - 1) // 3
    is_fill = (grid > 0) & ((grid - 1) % 3 == 0)
    shadeable = is_fill & ~np.isin(role, [ROLES.index(c) for c in _NO_SHADE])
    up, down, left_, right = _neighbours(grid)
    shade = shadeable & (((down == 0) & (up == grid)) | ((right == 0) & (left_ == grid)))
    grid = np.where(shade, grid + 1, grid)

    # Outline: each background pixel touching the shape takes the darkest tone of the colour
    # it touches (first of up, down, left, right that can cast an outline).
    casts = (grid > 0) & ~np.isin(role, [ROLES.index(c) for c in _NO_OUTLINE])
    src = np.where(casts, role, -1)
    outline = np.full(grid.shape, -1)
    for nb in reversed(_neighbours(src, -1)):  # reversed, so `up` is written last and wins
        outline = np.where(nb >= 0, nb, outline)
    grid = np.where((grid == 0) & (outline >= 0), 3 + 3 * outline, grid)

    for (r, c) in sparkles:  # small plus-shaped twinkles on free background only
        for dr, dc in ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)):
            if grid[r + dr, c + dc] == 0:
                grid[r + dr, c + dc] = _CODE["*"]
    return grid


def _build_tables():
    """Render every variant; collect per-archetype variant ranges and colour choices."""
    grids, var_start, var_count = [], [], []
    for arch in ARCHETYPES:
        var_start.append(len(grids))
        sparkle_sets = ((),) + SPARKLES if arch["sparkles"] else ((),)
        for parts in itertools.product(*arch["slots"]):
            for extras in itertools.product(*arch["extras"]):
                rows = _compose(parts, extras)
                for mirror in (False, True):
                    chars = [r[::-1] if mirror else r for r in rows]
                    for sp in sparkle_sets:
                        grids.append(_render(chars, sp))
        var_count.append(len(grids) - var_start[-1])
    grids = np.stack(grids)
    # A shift by ±1 px is allowed only where it moves nothing but background off the canvas.
    free_top, free_bottom = ~grids[:, 0].any(1), ~grids[:, -1].any(1)
    free_left, free_right = ~grids[:, :, 0].any(1), ~grids[:, :, -1].any(1)
    shift_lo = np.stack([-free_top.astype(int), -free_left.astype(int)], 1)  # (dy, dx) minimum
    shift_hi = np.stack([free_bottom.astype(int), free_right.astype(int)], 1)

    # colours[a, role, option] as RGB; n_options[a, role]
    choices = []
    for arch in ARCHETYPES:
        spec = {**_DEFAULT_COLOURS, **arch["colours"]}
        choices.append([[tuple(int(h[i:i + 2], 16) for i in (0, 2, 4)) for h in spec[r].split()]
                        for r in ROLES])
    max_opt = max(len(c) for arch_c in choices for c in arch_c)
    colours = np.zeros((len(ARCHETYPES), len(ROLES), max_opt, 3), np.int16)
    n_options = np.zeros((len(ARCHETYPES), len(ROLES)), np.int64)
    for a, arch_c in enumerate(choices):
        for r, opts in enumerate(arch_c):
            colours[a, r, :len(opts)] = opts
            n_options[a, r] = len(opts)
    # class_arch[k, j] = the j-th archetype of class k (padded with -1); class_n[k] = how many
    per_class = [[a for a, arch in enumerate(ARCHETYPES) if arch["cls"] == k]
                 for k in range(len(CLASS_NAMES))]
    class_n = np.array([len(p) for p in per_class])
    class_arch = np.full((len(CLASS_NAMES), class_n.max()), -1)
    for k, p in enumerate(per_class):
        class_arch[k, :len(p)] = p
    return (np.pad(grids, ((0, 0), (1, 1), (1, 1))), np.array(var_start), np.array(var_count),
            shift_lo, shift_hi, colours, n_options, class_arch, class_n)


(_GRIDS_PADDED, _VAR_START, _VAR_COUNT, _SHIFT_LO, _SHIFT_HI,
 _COLOURS, _N_OPTIONS, _CLASS_ARCH, _CLASS_N) = _build_tables()
_BG = np.array([[int(h[i:i + 2], 16) for i in (0, 2, 4)] for h in _BACKGROUNDS.split()], np.int16)


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------
def check_room_for(n: int) -> None:
    """Refuse, in one line, a batch of sprites that cannot fit in the memory that is free."""
    # Peak use measured with tracemalloc: 1.6 kB a sprite at n = 200,000, 2.1 kB at 50,000.
    check_memory(n * 2200, f"making {n:,} sprites", "ask for fewer (the default dataset is 90,000)")


def _check_count(value, name: str, example: int) -> int:
    """`value` as an int, or a one-line BadInput (a ValueError) unless it is a whole number >= 0."""
    return whole_number(value, name, 0, hint=f"(pass e.g. {name}={example})")


def make_sprites(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Return (sprites, labels): sprites (n, 16, 16, 3) uint8 RGB, labels (n, 5) float32 one-hot.

    The class of sprite i is ``i % 5`` (in ``CLASS_NAMES`` order), so counts per class differ
    by at most 1. The same (n, seed) always gives the same bytes. All random choices are drawn
    for the whole batch at once, so the first k sprites of a batch of n are *not* the same as
    a batch of k made with the same seed; make one big batch and slice it if you need both.
    """
    n = _check_count(n, "n", 1000)
    seed = _check_count(seed, "seed", 0)
    check_room_for(n)
    rng = np.random.default_rng(seed)
    n_roles, n_classes = len(ROLES), len(CLASS_NAMES)

    # Per-sprite choices, each drawn for the whole batch (fixed order = reproducible bytes).
    cls = np.arange(n) % n_classes
    arch = _CLASS_ARCH[cls, rng.integers(0, _CLASS_N[cls])]
    variant = _VAR_START[arch] + rng.integers(0, _VAR_COUNT[arch])
    shift = np.clip(rng.integers(-1, 2, size=(n, 2)), _SHIFT_LO[variant], _SHIFT_HI[variant])
    background = _BG[rng.integers(0, len(_BG), size=n)]
    option = rng.integers(0, _N_OPTIONS[arch])  # (n, roles): which colour of each role
    jitter = rng.integers(-_JITTER, _JITTER + 1, size=(n, n_roles + 1, 3), dtype=np.int16)

    # Palette per sprite: background, then fill / shade / outline for every role.
    fill = _COLOURS[arch[:, None], np.arange(n_roles)[None, :], option] + jitter[:, 1:]
    fill = np.clip(fill, 0, 255)
    palette = np.empty((n, 1 + 3 * n_roles, 3), np.uint8)
    palette[:, 0] = np.clip(background + jitter[:, 0] // 2, 0, 255)
    palette[:, 1::3] = fill
    palette[:, 2::3] = fill * 11 // 16  # shade: about 70 %
    palette[:, 3::3] = fill * 5 // 16  # outline: about 30 %, a dark tone of the same hue

    # Look up index grids (shifted by slicing the 1 px padded grid) and then colours, in chunks
    # to keep the int64 index arrays small.
    sprites = np.empty((n, SIZE, SIZE, 3), np.uint8)
    ar = np.arange(SIZE)
    for s in range(0, n, 8192):
        e = min(s + 8192, n)
        rows = (1 - shift[s:e, 0])[:, None, None] + ar[None, :, None]
        cols = (1 - shift[s:e, 1])[:, None, None] + ar[None, None, :]
        grids = _GRIDS_PADDED[variant[s:e, None, None], rows, cols]
        sprites[s:e] = palette[np.arange(s, e)[:, None, None], grids]
    labels = np.eye(n_classes, dtype=np.float32)[cls]
    return sprites, labels


def sprite_sheet(sprites: np.ndarray, labels: np.ndarray, per_class: int = 10,
                 scale: int = 4) -> np.ndarray:
    """A (H, W, 3) uint8 image: one row per class, the first `per_class` sprites of that class,
    each upscaled `scale` times with nearest neighbour (np.repeat), 2 px grey gaps between
    tiles. A class with fewer sprites leaves its remaining tiles grey."""
    sprites, labels = np.asarray(sprites), np.asarray(labels)
    if sprites.ndim != 4 or sprites.shape[3] != 3 or sprites.dtype != np.uint8:
        raise BadInput(f"sprites must be (n, h, w, 3) uint8, got {sprites.shape} {sprites.dtype}; "
                       "pass the first array make_sprites returns")
    if labels.ndim != 2 or labels.shape[0] != sprites.shape[0]:
        raise BadInput(f"labels must be (n, classes) with n = {sprites.shape[0]}, got "
                       f"{labels.shape}; pass the second array make_sprites returns")
    per_class = _check_count(per_class, "per_class", 10)
    scale = _check_count(scale, "scale", 4)
    if scale == 0:
        raise BadInput("scale must be >= 1; pass scale=4 for a readable sheet")
    gap, (h, w) = 2, sprites.shape[1:3]
    th, tw = h * scale + gap, w * scale + gap
    sheet = np.full((labels.shape[1] * th + gap, per_class * tw + gap, 3), 96, np.uint8)
    cls = labels.argmax(1)
    for k in range(labels.shape[1]):
        for j, i in enumerate(np.flatnonzero(cls == k)[:per_class]):
            y, x = gap + k * th, gap + j * tw  # top left corner of the tile
            sheet[y:y + h * scale, x:x + w * scale] = np.repeat(np.repeat(sprites[i], scale, 0), scale, 1)
    return sheet


def sprites_to_tensor(sprites: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float32 in [-1, 1]; the course's ToTensor + Normalize(0.5, 0.5)."""
    x = torch.from_numpy(np.ascontiguousarray(sprites)).permute(0, 3, 1, 2).to(torch.float32, copy=True)
    return x.div_(127.5).sub_(1)  # in place (on the copy): out of place peaks at 3 float copies of the set


def tensor_to_sprites(x: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) in [-1, 1] -> (N, H, W, 3) uint8, clipping what the sampler overshoots.

    NaN or ±inf is refused: clipped, it would be drawn as black or white, as if it were a colour."""
    if not torch.isfinite(x).all():
        raise BadInput("the images hold NaN or infinite values, which a picture cannot show; the model or sampler "
                       "that made them diverged (check its weights, or a lower guidance)")
    x = ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()
