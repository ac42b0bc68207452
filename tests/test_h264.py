"""H.264 SPS reading: max_num_ref_frames from avcC and Annex B extradata, and refusal of the rest."""

from __future__ import annotations

import av
import numpy as np
import pytest

from mvm.data.h264 import _rbsp, _sps_nals, max_ref_frames
from mvm.data.video_io import encode_video


def _extradata(path) -> bytes:
    with av.open(str(path)) as c:
        return bytes(c.streams.video[0].codec_context.extradata or b"")


@pytest.mark.parametrize("kw,refs", [(dict(refs=1), 1), (dict(refs=2), 2), (dict(refs=3, bframes=2), None)])
def test_reads_the_encoders_reference_count(tmp_path, kw, refs):
    frames = np.random.default_rng(0).integers(0, 255, (6, 32, 48, 3), dtype=np.uint8)
    encode_video(tmp_path / "v.mp4", frames, **kw)
    got = max_ref_frames(_extradata(tmp_path / "v.mp4"))
    if refs is None:  # x264 adds a reference for its B-pyramid
        assert got is not None and got >= kw["refs"]
    else:
        assert got == refs


def test_annex_b_gives_the_same_as_avcc(tmp_path):
    frames = np.random.default_rng(1).integers(0, 255, (6, 32, 48, 3), dtype=np.uint8)
    encode_video(tmp_path / "v.mp4", frames, refs=2)
    avcc = _extradata(tmp_path / "v.mp4")
    sps = _sps_nals(avcc)[0]
    assert max_ref_frames(b"\x00\x00\x00\x01" + sps + b"\x00\x00\x01\x68\xee") == max_ref_frames(avcc) == 2


def test_emulation_prevention_bytes_are_removed():
    assert _rbsp(b"\x67\x00\x00\x03\x01\x00\x00\x03\x00") == b"\x00\x00\x01\x00\x00\x00"


@pytest.mark.parametrize("data", [None, b"", b"\x01\x64\x00", b"\x01\x64\x00\x1e\xff\xe1\x00\x02\x67",
                                  b"\x00\x00\x00\x01\x68\xee", bytes(range(40))])
def test_missing_or_unreadable_sps_gives_none(data):
    assert max_ref_frames(data) is None
