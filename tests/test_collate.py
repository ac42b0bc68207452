"""MaskCollator: stacking, both masks, and masks reproducible per batch whatever the workers."""

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from mvm.grid import TokenGrid
from mvm.masking import DECODER_MASKS, ENCODER_MASKS, MaskCollator, batch_generator

GRID = TokenGrid(4, 4, 4, tubelet=2, patch=8)


def item(index: int, motion: bool = True, failed: list[str] | None = None) -> dict:
    g = torch.Generator().manual_seed(index)
    out = {"video": torch.randn(3, GRID.frames, 32, 32, generator=g), "label": index % 3, "index": index,
           "motion": torch.randn(*GRID.shape, 2, generator=g) * 4 if motion else None}
    if failed is not None:
        out["failed"] = failed
    return out


def collator(encoder: str = "mgm", decoder: str = "running_cell", seed: int = 0) -> MaskCollator:
    return MaskCollator(GRID, ENCODER_MASKS.build(encoder, ratio=0.75),
                        DECODER_MASKS.build(decoder, ratio=0.5), seed=seed)


class Items(Dataset):
    def __len__(self) -> int:
        return 12

    def __getitem__(self, i: int) -> dict:
        return item(i)


def test_stacks_items_and_adds_both_masks():
    batch = collator()([item(3, failed=["a.mp4: not_video"]), item(5), item(9, failed=["b.mp4: missing"])])
    assert batch["video"].shape == (3, 3, GRID.frames, 32, 32)
    assert batch["label"].dtype == torch.long and batch["label"].tolist() == [0, 2, 0]
    assert batch["index"].dtype == torch.long and batch["index"].tolist() == [3, 5, 9]
    assert batch["motion"].shape == (3, *GRID.shape, 2)
    assert batch["failed"] == ["a.mp4: not_video", "b.mp4: missing"]
    enc, dec = batch["encoder_mask"], batch["decoder_mask"]
    assert enc.shape == dec.shape == (3, GRID.num_tokens) and enc.dtype == dec.dtype == torch.bool
    assert enc.sum(1).tolist() == [int(0.75 * 16) * 4] * 3
    assert not bool((dec & ~enc).any()) and dec.sum(1).tolist() == [GRID.num_tokens // 2] * 3
    assert batch["mask_fallbacks"] == 0


@pytest.mark.parametrize("encoder", ENCODER_MASKS.names())
def test_masks_depend_on_seed_and_samples_not_on_call_order(encoder):
    c = collator(encoder)
    a1, b1 = c([item(0), item(1)]), c([item(2), item(3)])
    b2, a2 = collator(encoder)([item(2), item(3)]), collator(encoder)([item(0), item(1)])
    for key in ("encoder_mask", "decoder_mask"):
        assert torch.equal(a1[key], a2[key]) and torch.equal(b1[key], b2[key])
    assert not torch.equal(a1["encoder_mask"], b1["encoder_mask"])
    assert not torch.equal(a1["encoder_mask"], collator(encoder, seed=1)([item(0), item(1)])["encoder_mask"])


def test_same_masks_with_any_number_of_workers():
    def masks(workers: int) -> list[torch.Tensor]:
        loader = DataLoader(Items(), batch_size=4, num_workers=workers, collate_fn=collator())
        return [torch.cat([b["encoder_mask"], b["decoder_mask"]], 1) for b in loader]

    single, multi = masks(0), masks(2)
    assert len(single) == 3 and all(torch.equal(x, y) for x, y in zip(single, multi))


def test_items_without_motion_fall_back_and_are_counted():
    batch = collator()([item(0, motion=False), item(1, motion=False)])
    assert batch["motion"] is None and batch["mask_fallbacks"] == 2
    mixed = collator()([item(0, motion=False), item(1)])
    assert mixed["motion"].shape == (2, *GRID.shape, 2) and mixed["mask_fallbacks"] == 1
    assert mixed["encoder_mask"].sum(1).tolist() == [48, 48]


def test_bad_batches_are_refused():
    with pytest.raises(ValueError, match="empty"):
        collator()([])
    bad = item(0)
    bad["motion"] = torch.zeros(4, 4, 3, 2)
    with pytest.raises(ValueError, match="motion"):
        collator()([bad])


def test_batch_generator_is_a_function_of_seed_and_indices():
    draw = lambda seed, idx: torch.rand(4, generator=batch_generator(seed, idx))  # noqa: E731
    assert torch.equal(draw(0, [1, 2]), draw(0, torch.tensor([1, 2])))
    assert not torch.equal(draw(0, [1, 2]), draw(0, [2, 1]))
    assert not torch.equal(draw(0, [1, 2]), draw(1, [1, 2]))
    assert not torch.equal(draw(0, [1]), draw(0, [1, 0]))
    assert torch.equal(draw(-3, [2**40]), draw(-3, [2**40]))
