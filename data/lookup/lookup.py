"""The built-in lookup task's tool (written by `rft data make-lookup`): the table the model never sees."""

TABLE = {
    "ab": 2,
    "ao": 39,
    "bh": 39,
    "bn": 47,
    "bp": 38,
    "cl": 41,
    "cm": 8,
    "cs": 26,
    "cx": 18,
    "de": 12,
    "dn": 13,
    "dp": 13,
    "dr": 44,
    "dt": 32,
    "dx": 47,
    "dz": 24,
    "eh": 14,
    "ex": 2,
    "fd": 17,
    "fm": 21,
    "fn": 8,
    "fp": 3,
    "fu": 16,
    "fx": 23,
    "hg": 33,
    "hj": 3,
    "hl": 30,
    "hn": 26,
    "ia": 7,
    "ib": 7,
    "ip": 23,
    "it": 24,
    "jh": 4,
    "jk": 8,
    "jn": 12,
    "jp": 39,
    "jw": 41,
    "kf": 27,
    "kg": 37,
    "kw": 44,
    "lc": 40,
    "li": 15,
    "ll": 4,
    "lm": 44,
    "lw": 47,
    "ly": 32,
    "mf": 2,
    "ml": 28,
    "mm": 23,
    "mp": 46,
    "mv": 37,
    "na": 8,
    "nc": 28,
    "nd": 13,
    "ny": 11,
    "oc": 42,
    "pe": 14,
    "pk": 11,
    "ps": 5,
    "py": 29,
    "qo": 44,
    "rc": 22,
    "rl": 15,
    "rn": 5,
    "rq": 2,
    "sp": 46,
    "st": 45,
    "su": 43,
    "td": 18,
    "th": 31,
    "tl": 41,
    "tw": 6,
    "ua": 8,
    "ud": 38,
    "un": 3,
    "uo": 14,
    "ur": 45,
    "uz": 22,
    "vh": 40,
    "vk": 39,
    "vo": 35,
    "vp": 35,
    "vs": 4,
    "vt": 10,
    "wb": 15,
    "wj": 6,
    "wr": 28,
    "wz": 45,
    "xd": 5,
    "xh": 37,
    "xj": 17,
    "xs": 13,
    "xt": 42,
    "yb": 4,
    "yc": 8,
    "yj": 38,
    "yn": 7,
    "zf": 31,
    "zr": 45,
    "zz": 20,
}


def lookup(key: str) -> str:
    """The value stored under a key.

    Args:
        key: two lowercase letters, such as "ka".
    """
    if key not in TABLE:
        raise KeyError(f"no value is stored under {key!r}")
    return str(TABLE[key])


def total(keys: list[str]) -> str:
    """The sum of the values stored under some keys.

    Args:
        keys: the keys, such as ["ka", "mo"].
    """
    for key in keys:
        if key not in TABLE:
            raise KeyError(f"no value is stored under {key!r}")
    return str(sum(TABLE[key] for key in keys))
