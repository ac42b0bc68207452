"""The number of reference frames an H.264 stream may use, read from its sequence parameter set.

FFmpeg does not export how far back a motion vector's reference lies, so ``mvm.motion.codec``
checks candidate distances against the pixels, which needs every decoded frame in RGB. A
stream whose SPS allows one reference frame and that has no B-frames (what ``mvm prepare``
writes) cannot point farther than the previous frame: for it the check, and the RGB conversion of
frames no clip uses, can be skipped. This module reads ``max_num_ref_frames`` from the stream's
``extradata`` (``avcC`` in MP4/MKV, or Annex B start codes), nothing else.
"""

from __future__ import annotations

#: profile_idc values whose SPS carries chroma format, bit depths and scaling matrices (H.264 7.3.2.1.1)
_HIGH_PROFILES = frozenset({100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135})


class _Bits:
    """MSB-first bit reader over an RBSP (emulation prevention bytes already removed)."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def u(self, n: int) -> int:
        value = 0
        for _ in range(n):
            byte = self.pos >> 3
            if byte >= len(self.data):
                raise ValueError("SPS ends early")
            value = (value << 1) | ((self.data[byte] >> (7 - (self.pos & 7))) & 1)
            self.pos += 1
        return value

    def ue(self) -> int:  # Exp-Golomb, unsigned
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 31:
                raise ValueError("bad Exp-Golomb code")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:  # Exp-Golomb, signed
        k = self.ue()
        return (k + 1) // 2 if k % 2 else -(k // 2)


def _rbsp(nal: bytes) -> bytes:
    """NAL payload without its header byte and without emulation prevention (00 00 03 -> 00 00)."""
    out, zeros = bytearray(), 0
    for b in nal[1:]:
        if zeros >= 2 and b == 3:
            zeros = 0
            continue
        out.append(b)
        zeros = zeros + 1 if b == 0 else 0
    return bytes(out)


def _sps_nals(extradata: bytes) -> list[bytes]:
    """The SPS NAL units (type 7) in ``avcC`` or Annex B extradata."""
    if len(extradata) > 6 and extradata[0] == 1:  # avcC: version 1, ..., numOfSPS & 0x1f, then length-prefixed
        count, pos, nals = extradata[5] & 0x1F, 6, []
        for _ in range(count):
            size = int.from_bytes(extradata[pos:pos + 2], "big")
            nals.append(extradata[pos + 2:pos + 2 + size])
            pos += 2 + size
        return [n for n in nals if n and n[0] & 0x1F == 7]
    # Annex B: units separated by 00 00 01 (or 00 00 00 01)
    parts = extradata.split(b"\x00\x00\x01")
    return [p.rstrip(b"\x00") for p in parts[1:] if p and p[0] & 0x1F == 7]


def _scaling_list(bits: _Bits, size: int) -> None:
    last = nxt = 8
    for _ in range(size):
        if nxt:
            nxt = (last + bits.se() + 256) % 256
        last = nxt or last


def max_ref_frames(extradata: bytes | None) -> int | None:
    """``max_num_ref_frames`` of the first SPS in H.264 ``extradata``; None when absent or unreadable."""
    if not extradata:
        return None
    try:
        nals = _sps_nals(bytes(extradata))
        if not nals:
            return None
        bits = _Bits(_rbsp(nals[0]))
        profile = bits.u(8)
        bits.u(16)  # constraint flags, level_idc
        bits.ue()  # seq_parameter_set_id
        if profile in _HIGH_PROFILES:
            chroma = bits.ue()
            if chroma == 3:
                bits.u(1)  # separate_colour_plane_flag
            bits.ue(), bits.ue()  # bit depths
            bits.u(1)  # qpprime_y_zero_transform_bypass_flag
            if bits.u(1):  # seq_scaling_matrix_present_flag
                for i in range(8 if chroma != 3 else 12):
                    if bits.u(1):
                        _scaling_list(bits, 16 if i < 6 else 64)
        bits.ue()  # log2_max_frame_num_minus4
        poc_type = bits.ue()
        if poc_type == 0:
            bits.ue()  # log2_max_pic_order_cnt_lsb_minus4
        elif poc_type == 1:
            bits.u(1)
            bits.se(), bits.se()
            for _ in range(bits.ue()):
                bits.se()
        return bits.ue()  # max_num_ref_frames
    except (ValueError, IndexError):
        return None
