"""Bits per sample of an opened image, from the file's own header.

Pillow opens a 16-bit RGB TIFF or PNG as mode "RGB" and keeps only the high byte of each
sample (30000 becomes 117), so the mode alone cannot tell an 8-bit patch from a 16-bit one.
The header can: TIFF tag 258 (BitsPerSample), and for PNG the raw mode Pillow decodes from
("RGB;16B" for 16 bits). Used by the builder and by ``hcdtf predict``; imports nothing heavy.
"""

from __future__ import annotations

TIFF_BITS_PER_SAMPLE = 258


def bits_per_sample(im) -> tuple[int, ...] | None:
    """The bits of each sample as the file stores them (None if the format does not say)."""
    tags = getattr(im, "tag_v2", None)
    if im.format == "TIFF" and tags is not None:
        bits = tags.get(TIFF_BITS_PER_SAMPLE)
        if bits is None:
            return (1,)  # TIFF's default when the tag is absent (bilevel)
        return tuple(int(b) for b in bits) if isinstance(bits, (tuple, list)) else (int(bits),)
    if im.format == "PNG":
        rawmode = getattr(getattr(im, "png", None), "im_rawmode", None)
        if rawmode is None and im.tile:
            rawmode = tuple(im.tile[0])[3]
        if isinstance(rawmode, str):
            return (16,) if ";16" in rawmode else (8,)
    return None


def not_8bit(im) -> str | None:
    """A phrase saying how the file is not 8 bits per sample, or None if it is (or cannot tell)."""
    bits = bits_per_sample(im)
    if bits is None or all(b == 8 for b in bits):
        return None
    shown = "/".join(str(b) for b in bits) if len(set(bits)) > 1 else str(bits[0])
    return f"{shown} bits per sample in the file (Pillow would keep only the high byte)"
