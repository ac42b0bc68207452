"""Datasets: list parsing, folder sources, items, bad files replaced and counted, exact resume."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from mvm.config import DataConfig
from mvm.data.datasets import EpochSampler, VideoDataset, collate_items
from mvm.data.formats import DataSourceError, open_source, scan_folder
from mvm.data.transforms import ClipTransform
from mvm.data.video_io import encode_video
from mvm.grid import TokenGrid

GRID = TokenGrid.from_clip(frames=4, size=32, tubelet=2, patch=16)


def _cfg(**kw) -> DataConfig:
    base = dict(frames=4, stride=2, size=32, motion="none", workers=0)
    return DataConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("videos")
    rng = np.random.default_rng(0)
    for i in range(4):
        encode_video(root / f"v{i}.mp4", rng.integers(0, 255, (12, 40, 48, 3), dtype=np.uint8))
    (root / "zero.mp4").write_bytes(b"")
    (root / "text.mp4").write_text("not a video\n" * 20)
    return root


def _pairs(path, root=""):
    src = open_source(path, "videomae", root)
    return [(e.path, e.label) for e in src.entries], src.malformed


def test_read_list_formats_and_relative_paths(tmp_path):
    lst = tmp_path / "lists" / "train.csv"
    lst.parent.mkdir()
    lst.write_text("# comment\n\na.mp4 3\nsub/b.mp4,1\n/abs/c.mp4\n  d.mp4   0  \nmy clip.mp4 2\n")
    assert _pairs(lst)[0] == [(str(tmp_path / "lists" / "a.mp4"), 3), (str(tmp_path / "lists" / "sub/b.mp4"), 1),
                              ("/abs/c.mp4", -1), (str(tmp_path / "lists" / "d.mp4"), 0),
                              (str(tmp_path / "lists" / "my clip.mp4"), 2)]
    assert _pairs(lst, root=str(tmp_path))[0][0] == (str(tmp_path / "a.mp4"), 3)
    header = tmp_path / "h.csv"
    header.write_text("path,label\nx.mp4,2\n")
    assert _pairs(header)[0] == [(str(tmp_path / "x.mp4"), 2)]


@pytest.mark.parametrize("bad", ["a.mp4 notalabel", "a.mp4 1 x", "a.mp4,1,2"])
def test_malformed_line_names_file_and_line(tmp_path, bad):
    lst = tmp_path / "train.txt"
    lst.write_text(f"ok.mp4 1\n\n{bad}\nok2.mp4 0\n")
    entries, malformed = _pairs(lst)  # the good lines are kept
    assert [label for _, label in entries] == [1, 0] and len(malformed) == 1
    assert "train.txt:3:" in malformed[0] and bad.split()[0] in malformed[0]


def test_folder_source_labels_from_sorted_subfolders(tmp_path, videos):
    for cls in ("zebra", "ant"):
        (tmp_path / cls).mkdir()
        (tmp_path / cls / "clip.mp4").write_bytes((videos / "v0.mp4").read_bytes())
    (tmp_path / "zebra" / "notes.txt").write_text("ignored")
    entries, classes = scan_folder(tmp_path)
    assert classes == ["ant", "zebra"]
    assert [e[:2] for e in entries] == [(str(tmp_path / "ant" / "clip.mp4"), 0), (str(tmp_path / "zebra" / "clip.mp4"), 1)]
    ds = VideoDataset(str(tmp_path), GRID, _cfg(), train=False)
    assert len(ds) == 2 and ds.classes == ["ant", "zebra"] and ds[1]["label"] == 1
    flat, classes = scan_folder(videos)
    assert classes == [] and {e.label for e in flat} == {-1} and len(flat) == 6


def test_item_shapes_and_reproducible_augmentation(videos):
    entries = [(str(videos / f"v{i}.mp4"), i) for i in range(4)]
    ds = VideoDataset(entries, GRID, _cfg(), train=True, seed=3)
    item = ds[1]
    assert item["video"].shape == (3, 4, 32, 32) and item["video"].dtype == torch.float32
    assert item["motion"].shape == (2, 2, 2, 2) and not item["motion"].any()
    assert item["label"] == 1 and item["index"] == 1 and item["failed"] == []
    again = VideoDataset(entries, GRID, _cfg(), train=True, seed=3)[1]
    assert torch.equal(item["video"], again["video"])
    later = ds[1 + 4 * 5]  # the same file in epoch 5: same label, its own augmentation
    assert later["label"] == 1 and later["index"] == 21
    assert not torch.equal(item["video"], later["video"])
    evals = [VideoDataset(entries, GRID, _cfg(), train=False, seed=s)[2]["video"] for s in (0, 1)]
    assert torch.equal(*evals)  # evaluation is the centre clip and crop whatever the seed



def test_uint8_items_are_the_float_items_before_normalisation(videos):
    from mvm.data.transforms import normalise_pixels

    entries = [(str(videos / f"v{i}.mp4"), i) for i in range(4)]
    for repeat in (1, 3):
        floats = VideoDataset(entries, GRID, _cfg(repeat=repeat), train=True, seed=3)
        bytes_ = VideoDataset(entries, GRID, _cfg(repeat=repeat), train=True, seed=3, pixels="uint8")
        for i in (1, 6):
            a, b = floats[i], bytes_[i]
            assert b["video"].dtype == torch.uint8 and b["video"].shape == a["video"].shape
            assert torch.equal(normalise_pixels(b["video"], floats.cfg.mean, floats.cfg.std), a["video"])
            assert torch.equal(a["motion"], b["motion"])
    with pytest.raises(ValueError, match="pixels"):
        VideoDataset(entries, GRID, _cfg(), train=True, pixels="half")


def test_bad_files_are_replaced_and_reported(videos):
    entries = [(str(videos / "v0.mp4"), 0), (str(videos / "zero.mp4"), 1), (str(videos / "missing.mp4"), 1),
               (str(videos / "text.mp4"), 2), (str(videos / "v1.mp4"), 7), (str(videos / "v2.mp4"), 2)]
    ds = VideoDataset(entries, GRID, _cfg(num_classes=4), train=True)
    item = ds[1]
    assert item["label"] == 2 and item["index"] == 1  # v2.mp4, the next good sample
    reasons = [f.split("|")[0] for f in item["failed"]]
    assert reasons[:2] == ["empty_file", "missing"] and reasons[2] in ("not_video", "decode_error")
    assert reasons[3] == "bad_label" and item["failed"][3].endswith("v1.mp4")
    assert ds.failure_counts["bad_label"] == 1 and sum(ds.failure_counts.values()) == 4
    batch = collate_items([ds[0], ds[4]])
    assert batch["video"].shape == (2, 3, 4, 32, 32) and batch["label"].tolist() == [0, 2]
    assert batch["failed"] == []  # known-bad files are skipped without another try or report
    assert ds.bad.tolist() == [False, True, True, True, True, False]
    fresh = VideoDataset(entries, GRID, _cfg(num_classes=4), train=True)
    first = fresh[4]
    assert torch.equal(first["video"], ds[4]["video"])  # the same item whether or not the failure was known
    assert first["failed"] == [f"bad_label|{videos / 'v1.mp4'}"]


def test_all_bad_gives_up_naming_the_file(tmp_path):
    ds = VideoDataset([(str(tmp_path / f"gone{i}.mp4"), 0) for i in range(3)], GRID, _cfg(), train=True)
    with pytest.raises(RuntimeError, match=r"no usable video .*3 of 3 files known bad.*gone\d\.mp4"):
        ds[0]
    assert ds.bad.all()


def test_list_source_skips_malformed_lines_and_keeps_them(videos, tmp_path):
    lst = tmp_path / "train.txt"
    lst.write_text(f"{videos / 'v0.mp4'} 0\nbroken line here\nv1.mp4 1\n")
    ds = VideoDataset(str(lst), GRID, _cfg(root=str(videos)), train=False)
    assert len(ds) == 2 and ds[1]["label"] == 1
    assert len(ds.malformed_lines) == 1 and "train.txt:2" in ds.malformed_lines[0]
    with pytest.raises(DataSourceError, match="nowhere"):
        VideoDataset(str(tmp_path / "nowhere.txt"), GRID, _cfg(), train=False)
    with pytest.raises(ValueError, match="grid"):
        VideoDataset(str(lst), GRID, _cfg(frames=8), train=False)


def test_epoch_sampler_is_a_permutation_per_epoch_and_resumes_exactly():
    n = 7
    full = list(itertools.islice(iter(EpochSampler(n, seed=5)), 5 * n))
    for e in range(5):
        assert sorted(full[e * n:(e + 1) * n]) == list(range(e * n, (e + 1) * n))
    assert full[:n] != full[n:2 * n] and full[:n] != list(range(n))  # reshuffled every epoch
    for start in (0, 3, n, 2 * n + 4):
        resumed = list(itertools.islice(iter(EpochSampler(n, seed=5, start=start)), 5 * n - start))
        assert resumed == full[start:]
    assert list(itertools.islice(iter(EpochSampler(n, seed=6)), n)) != full[:n]
    assert list(itertools.islice(iter(EpochSampler(3, shuffle=False)), 6)) == [0, 1, 2, 3, 4, 5]
    ranks = [list(itertools.islice(iter(EpochSampler(n, seed=5, start=3, num_replicas=2, rank=r)), 8))
             for r in (0, 1)]
    assert sorted(ranks[0] + ranks[1]) == sorted(full[3:19])
    with pytest.raises(ValueError):
        EpochSampler(0)


def test_dataloader_with_workers_matches_in_process(videos):
    entries = [(str(videos / f"v{i}.mp4"), i) for i in range(4)] + [(str(videos / "zero.mp4"), 0)]

    def batches(workers: int) -> list[dict]:
        ds = VideoDataset(entries, GRID, _cfg(), train=True, seed=1)
        loader = torch.utils.data.DataLoader(ds, batch_size=3, sampler=EpochSampler(len(ds), seed=1, start=2),
                                             num_workers=workers, collate_fn=collate_items)
        return list(itertools.islice(iter(loader), 3))

    a, b = batches(0), batches(2)
    for x, y in zip(a, b):
        assert torch.equal(x["video"], y["video"]) and torch.equal(x["index"], y["index"])
    # zero.mp4 is drawn twice in 9 draws, but reported once: the workers share the bad-file table
    # (two workers racing on it could both report it; the tracker counts distinct files)
    fails = [[f for x in run for f in x["failed"]] for run in (a, b)]
    assert fails[0] == [f"empty_file|{videos / 'zero.mp4'}"] and set(fails[1]) == set(fails[0])


def test_motion_items_are_on_the_token_grid(videos):
    pytest.importorskip("mvm.motion.field")
    entries = [(str(videos / "v0.mp4"), 0)]
    for source in ("auto", "estimate"):
        item = VideoDataset(entries, GRID, _cfg(motion=source), train=True)[0]
        assert item["motion"].shape == (2, 2, 2, 2) and item["motion"].dtype == torch.float32
        assert torch.isfinite(item["motion"]).all()
    off = VideoDataset(entries, GRID, _cfg(motion="auto"), train=True, with_motion=False)[0]
    assert not off["motion"].any()


@pytest.mark.parametrize("kw", [dict(refs=1), dict(refs=3, bframes=2)])
def test_codec_motion_items_equal_a_full_decode(tmp_path, kw):
    """Codec motion converts only the clips' frames to RGB (a single-reference stream needs no
    pixels, others are checked on the luma planes); items must equal those cut from a whole decode
    (the decode cache's path), at repeat 1 and 2."""
    rng = np.random.default_rng(8)
    base = np.kron(rng.integers(0, 255, (12, 30, 3)), np.ones((4, 4, 1))).astype(np.uint8)  # 48x120 blocks
    x = np.stack([np.roll(base, 2 * t, axis=1)[4:44, 8:64] for t in range(40)])  # panning 2 px/frame
    encode_video(tmp_path / "p.mp4", x, gop=8, **kw)
    path = str(tmp_path / "p.mp4")
    for repeat in (1, 2):
        cfg = _cfg(motion="codec", repeat=repeat, frames=4, stride=3)
        sparse = VideoDataset([(path, 0)], GRID, cfg, train=True, seed=1)
        whole = VideoDataset([(path, 0)], GRID, _cfg(motion="codec", repeat=repeat, frames=4, stride=3, cache_mb=64),
                             train=True, seed=1)
        window = sparse._decode(sparse.entries[0], sparse.clip_rngs(0))[0]
        assert window.rgb is not None and (window.luma is None) == (kw["refs"] == 1)  # the sparse path
        assert whole._decode(whole.entries[0], whole.clip_rngs(0))[0].rgb is None
        for i in range(4):
            a, b = sparse[i], whole[i]
            assert torch.equal(a["video"], b["video"]) and torch.equal(a["motion"], b["motion"])
            assert a["motion"].abs().max() > 0


def test_decode_cache_gives_identical_items_and_respects_its_budget(videos):
    from mvm.data.cache import DecodeCache

    entries = [(str(videos / f"v{i}.mp4"), i) for i in range(4)]
    plain = VideoDataset(entries, GRID, _cfg(), train=True, seed=2)
    for motion in ("none", "auto"):
        cached = VideoDataset(entries, GRID, _cfg(motion=motion, cache_mb=64), train=True, seed=2)
        for i in (0, 1, 4, 5, 9):  # indices 4, 5, 9 revisit files 0, 1: cache hits
            b = cached[i]
            cold = VideoDataset(entries, GRID, _cfg(motion=motion, cache_mb=64), train=True, seed=2)[i]
            assert torch.equal(cold["video"], b["video"]) and torch.equal(cold["motion"], b["motion"])
            # pixels never depend on the cache (motion may: a whole decode can find codec vectors
            # that a partial one never reaches, and "auto" then prefers them)
            assert torch.equal(plain[i]["video"], b["video"])
        assert cached.cache.hits == 3 and cached.cache.misses == 2 and len(cached.cache) == 2
    # one 12x40x48 video is 69 KB of frames: a 0.1 MB budget holds one, the older one leaves
    small = VideoDataset(entries, GRID, _cfg(cache_mb=0.1), train=True, seed=2)
    small[0], small[1], small[4]
    assert len(small.cache) == 1 and small.cache.used <= small.cache.budget and small.cache.misses == 3
    with pytest.raises(ValueError, match="budget"):
        DecodeCache(0)


def test_repeat_gives_distinct_clips_from_one_decode_and_identical_redraws(videos):
    from mvm.masking import DECODER_MASKS, ENCODER_MASKS, MaskCollator

    entries = [(str(videos / f"v{i}.mp4"), i) for i in range(4)]
    ds = VideoDataset(entries, GRID, _cfg(repeat=3, motion="auto"), train=True, seed=4)
    item = ds[2]
    assert item["video"].shape == (3, 3, 4, 32, 32) and item["motion"].shape == (3, 2, 2, 2, 2)
    clips = item["video"]
    assert not torch.equal(clips[0], clips[1]) and not torch.equal(clips[1], clips[2])
    again = VideoDataset(entries, GRID, _cfg(repeat=3, motion="auto"), train=True, seed=4)[2]
    assert torch.equal(again["video"], clips) and torch.equal(again["motion"], item["motion"])
    assert VideoDataset(entries, GRID, _cfg(repeat=3), train=False)[0]["video"].dim() == 4  # eval: one clip
    collate = MaskCollator(GRID, ENCODER_MASKS.build("tube", ratio=0.75), DECODER_MASKS.build("none", ratio=1.0), seed=0)
    batch = collate([item, ds[0]])
    assert batch["video"].shape == (6, 3, 4, 32, 32) and batch["index"].tolist() == [2, 2, 2, 0, 0, 0]
    assert batch["clip"].tolist() == [0, 1, 2, 0, 1, 2] and batch["label"].tolist() == [2, 2, 2, 0, 0, 0]
    masks = batch["encoder_mask"]
    assert len({tuple(m.tolist()) for m in masks[:3]}) == 3  # each repeat its own mask
    flat = collate_items([item])
    assert flat["video"].shape == (3, 3, 4, 32, 32) and flat["clip"].tolist() == [0, 1, 2]


def test_video_loader_counts_clips_and_resumes_exactly(videos):
    from mvm.data.loader import video_loader

    entries = [(str(videos / f"v{i}.mp4"), i) for i in range(4)]
    ds = VideoDataset(entries, GRID, _cfg(repeat=2), train=True, seed=5)
    full = list(itertools.islice(iter(video_loader(ds, 4, collate_items, 0, seed=5)), 4))
    assert all(b["video"].shape[0] == 4 for b in full)
    resumed = list(itertools.islice(iter(video_loader(ds, 4, collate_items, 0, seed=5, start_sample=8)), 2))
    for x, y in zip(full[2:], resumed):
        assert torch.equal(x["video"], y["video"]) and torch.equal(x["index"], y["index"])
    with pytest.raises(ValueError, match="multiple of data.repeat=2"):
        video_loader(ds, 3, collate_items, 0, seed=5)


def test_loader_workers_retain_their_heap(videos):
    import platform
    import subprocess
    import sys

    from mvm.data import loader

    code = "from mvm.data.loader import retain_heap; print(retain_heap())"
    got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert got == str(platform.libc_ver()[0] == "glibc")  # no-op (False) off glibc
    ds = VideoDataset([(str(videos / "v0.mp4"), 0)], GRID, _cfg(), train=True)
    assert loader.video_loader(ds, 2, collate_items, 2, seed=0).worker_init_fn is loader.worker_init
    assert loader.video_loader(ds, 2, collate_items, 0, seed=0).worker_init_fn is None


def test_workers_give_the_same_batches_in_shared_memory(videos):
    from mvm.data.loader import video_loader

    entries = [(str(videos / f"v{i}.mp4"), i) for i in range(4)]
    ds = VideoDataset(entries, GRID, _cfg(repeat=2), train=True, seed=3)
    here = list(itertools.islice(iter(video_loader(ds, 4, collate_items, 0, seed=3)), 3))
    there = list(itertools.islice(iter(video_loader(ds, 4, collate_items, 1, seed=3)), 3))
    for a, b in zip(here, there):
        assert torch.equal(a["video"], b["video"]) and torch.equal(a["index"], b["index"])
        assert b["video"].is_shared()  # collated in the worker straight into shared memory


def test_segments_sample_inside_their_span(tmp_path):
    frames = np.zeros((60, 32, 32, 3), np.uint8)
    frames[:, :, :, 0] = np.arange(60, dtype=np.uint8)[:, None, None] * 4  # red = 4 x frame number
    encode_video(tmp_path / "long.mp4", frames, gop=8, crf=0)
    cfg = _cfg(mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0], scales=[1.0], flip=False)
    ds = VideoDataset([(str(tmp_path / "long.mp4"), 0, 30, 40)], GRID, cfg, train=True, seed=0)
    for i in range(6):
        red = ds[i]["video"][0].mean((1, 2)) * 255 / 4  # frame numbers of the clip
        assert (red > 29.5).all() and (red < 39.5).all(), red
    ds = VideoDataset([(str(tmp_path / "long.mp4"), 0, 70, 80)], GRID, cfg, train=True)
    with pytest.raises(RuntimeError, match="empty_span|outside"):
        ds[0]


def test_repeat_mode_frames_shares_one_clip_and_clips_draws_own_starts(videos):
    from mvm.data.formats import Entry

    entry = Entry(str(videos / "v0.mp4"), 0, None, None)
    same = VideoDataset([entry[:2]], GRID, _cfg(repeat=4, repeat_mode="frames", stride=1), train=True, seed=1)
    _, clips = same._decode(entry, same.clip_rngs(0))
    assert len(clips) == 4 and all(np.array_equal(c, clips[0]) for c in clips)  # one decode serves all
    own = VideoDataset([entry[:2]], GRID, _cfg(repeat=4, repeat_mode="clips", stride=1), train=True, seed=1)
    _, clips = own._decode(entry, own.clip_rngs(0))
    assert len({int(c[0]) for c in clips}) > 1  # each repeat its own start


def test_each_repeat_reads_only_its_crop_and_gets_the_pixels_of_the_whole_frames(tmp_path, monkeypatch):
    from mvm.data.video_io import DecodedVideo, HeldFrames

    y, x = np.mgrid[0:40, 0:48]
    for i in range(2):  # patterns that move (codec motion needs vectors), B-frames (frames held unconverted)
        frames = np.stack([np.stack([(x * 5 + y * 3 + (2 + i) * t) % 256, (x * 2 - 3 * t) % 256, (y * 7 + t) % 256], -1)
                           for t in range(24)]).astype(np.uint8)
        encode_video(tmp_path / f"v{i}.mp4", frames, gop=24, bframes=2, refs=2)

    reads, params = [], []
    real, draw = DecodedVideo.pixels, ClipTransform.draw
    monkeypatch.setattr(DecodedVideo, "pixels", lambda self, idx, box=None: reads.append((self, idx, box))
                        or real(self, idx, box))
    monkeypatch.setattr(ClipTransform, "draw", lambda self, *a: params.append(draw(self, *a)) or params[-1])
    entries = [(str(tmp_path / f"v{i}.mp4"), i) for i in range(2)]
    for mode in ("frames", "clips"):
        for motion in ("none", "codec"):
            reads.clear()
            params.clear()
            ds = VideoDataset(entries, GRID, _cfg(repeat=4, repeat_mode=mode, motion=motion), train=True, seed=2,
                              with_motion=motion == "codec")
            item = ds[1]
            assert len(reads) == 4 and all(box is not None for _, _, box in reads)  # a crop each, not the frames
            # codec motion's decode holds the clips' frames unconverted until their crops are read
            assert isinstance(reads[0][0].rgb_frames, HeldFrames) == (motion == "codec")
            assert [box for _, _, box in reads] == [p[:4] for p in params]
            # the same pixels as transforming each repeat's whole frames with its crop and flip
            for k, (window, idx, _) in enumerate(reads):
                out = torch.empty_like(item["video"][k])
                ds.transform(real(window, idx), None, None, out=out, params=params[k])
                assert torch.equal(out, item["video"][k])
            assert len({tuple(v.flatten()[:64].tolist()) for v in item["video"]}) > 1  # the crops differ


def test_motion_frames_references_skips_unshown_b_frames_and_keeps_the_clip(tmp_path):
    y, x = np.mgrid[0:48, 0:64]
    frames = np.stack([np.stack([(x * 5 + y * 3 + 2 * t) % 256, (x * 2 - 3 * t) % 256, (y * 7 + t) % 256], -1)
                       for t in range(40)]).astype(np.uint8)  # a pattern moving every frame
    encode_video(tmp_path / "b.mp4", frames, gop=40, bframes=3, refs=2)
    grid = TokenGrid.from_clip(4, 32, 2, 16)
    items = {mf: VideoDataset([(str(tmp_path / "b.mp4"), 0)], grid, _cfg(motion="codec", stride=4, motion_frames=mf),
                              train=True, seed=3)[0] for mf in ("all", "references")}
    assert torch.equal(items["all"]["video"], items["references"]["video"])  # the shown frames are decoded alike
    a, r = items["all"]["motion"], items["references"]["motion"]
    assert a.shape == r.shape and a.abs().max() > 0.5
    assert not torch.equal(a, r) and (r - a).norm() / a.norm() < 0.5  # skipped frames filled from neighbours
