"""Scoring found masks against manual ROIs (``sim.scoring``): the numbers bench_real reports.

Small synthetic masks with known answers, so a wrong orientation, a many-to-one match or an
off-by-one at the IoU threshold shows up as a wrong count, not as a slightly different F1.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mesmerize_widgets.sim.scoring import (
    binarize_footprints,
    iou_matrix,
    masks_from_coordinates,
    score_masks,
)

DIMS = (40, 50)  # rows != cols: a transposed mask has the wrong shape or lands elsewhere
RADIUS = 3
REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real" / "neurofinder-01.01-crop"


def disk(centre: tuple[float, float], radius: float = RADIUS, dims: tuple[int, int] = DIMS) -> np.ndarray:
    """Boolean disk at (row, col)."""
    rr, cc = np.mgrid[: dims[0], : dims[1]]
    return (rr - centre[0]) ** 2 + (cc - centre[1]) ** 2 <= radius**2


CENTRES = [(8, 8), (8, 30), (20, 15), (30, 40), (32, 10)]


@pytest.fixture
def cells() -> np.ndarray:
    """Five separate disks (n, rows, cols)."""
    return np.stack([disk(c) for c in CENTRES])


def test_self_match_is_perfect(cells: np.ndarray) -> None:
    s = score_masks(cells, cells)
    assert (s["precision"], s["recall"], s["f1"]) == (1.0, 1.0, 1.0)
    assert s["matched"] == s["found"] == s["reference"] == len(cells)
    assert sorted(s["pairs"]) == [(i, i) for i in range(len(cells))]


def test_one_pixel_shift_still_matches(cells: np.ndarray) -> None:
    shifted = np.roll(cells, 1, axis=2)
    iou = np.diag(iou_matrix(cells, shifted))
    assert np.all(iou > 0.5), iou
    assert score_masks(shifted, cells)["f1"] == 1.0


def test_far_shift_matches_nothing() -> None:
    # each cell against a copy two diameters away (down and right): no overlap, no match
    big = (DIMS[0] + 4 * RADIUS, DIMS[1] + 4 * RADIUS)
    for r, c in CENTRES:
        ref = disk((r, c), dims=big)[None]
        far = disk((r + 4 * RADIUS, c + 4 * RADIUS), dims=big)[None]
        assert iou_matrix(ref, far)[0, 0] == 0
        s = score_masks(far, ref)
        assert (s["matched"], s["precision"], s["recall"], s["f1"]) == (0, 0.0, 0.0, 0.0)


def test_extra_found_mask_lowers_precision_exactly(cells: np.ndarray) -> None:
    found = np.concatenate([cells, disk((20, 40))[None]])
    s = score_masks(found, cells)
    assert s["matched"] == 5
    assert s["precision"] == pytest.approx(5 / 6)
    assert s["recall"] == 1.0
    assert s["f1"] == pytest.approx(2 * (5 / 6) / (5 / 6 + 1))


def test_missing_mask_lowers_recall_exactly(cells: np.ndarray) -> None:
    s = score_masks(cells[:4], cells)
    assert s["precision"] == 1.0
    assert s["recall"] == pytest.approx(4 / 5)
    assert s["f1"] == pytest.approx(2 * 0.8 / 1.8)


def test_two_found_on_one_roi_count_once(cells: np.ndarray) -> None:
    # a duplicate of cell 2, shifted 1 px: both overlap ROI 2 well, only one may match it
    found = np.concatenate([cells, np.roll(cells[2:3], 1, axis=1)])
    assert iou_matrix(cells[2:3], found[[2, 5]]).min() > 0.5
    s = score_masks(found, cells)
    assert s["matched"] == 5
    assert s["precision"] == pytest.approx(5 / 6)
    assert s["recall"] == 1.0
    assert len({r for r, _ in s["pairs"]}) == len({c for _, c in s["pairs"]}) == 5


def _pair_with_iou(inter: int, union: int) -> tuple[np.ndarray, np.ndarray]:
    """Two row-segment masks with exactly ``inter`` shared pixels and ``union`` in all."""
    a = np.zeros((1, 4, union), bool)
    b = np.zeros_like(a)
    extra_a = (union - inter) // 2
    a[0, 1, : inter + extra_a] = True
    b[0, 1, extra_a:] = True
    assert (a & b).sum() == inter and (a | b).sum() == union
    return a, b


def test_iou_threshold_is_inclusive() -> None:
    a, b = _pair_with_iou(3, 10)  # IoU exactly 0.3
    assert iou_matrix(a, b)[0, 0] == pytest.approx(0.3)
    assert score_masks(b, a)["matched"] == 1
    a, b = _pair_with_iou(29, 100)  # IoU 0.29, just under
    assert score_masks(b, a)["matched"] == 0
    assert score_masks(b, a, min_iou=0.29)["matched"] == 1


def test_empty_inputs() -> None:
    none = np.zeros((0, *DIMS), bool)
    one = disk((10, 10))[None]
    assert score_masks(none, one) == {"matched": 0, "found": 0, "reference": 1, "precision": 0.0,
                                      "recall": 0.0, "f1": 0.0, "pairs": []}
    assert score_masks(one, none)["precision"] == 0.0


def test_binarize_footprints_fortran_order_orientation() -> None:
    # an off-centre, elongated (rows std 2, cols std 4) Gaussian in a non-square field
    centre, sig = (10.0, 33.0), (2.0, 4.0)
    rr, cc = np.mgrid[: DIMS[0], : DIMS[1]]
    img = np.exp(-0.5 * (((rr - centre[0]) / sig[0]) ** 2 + ((cc - centre[1]) / sig[1]) ** 2))
    A = np.stack([img.ravel(order="F"), 3.0 * img.ravel(order="F")], axis=1)  # scale must not matter
    masks = binarize_footprints(A, DIMS, thr=0.2)
    assert masks.shape == (2, *DIMS) and masks.dtype == bool
    expected = img >= 0.2  # an ellipse: sqrt(2 ln 5) ~ 1.79 stds along each axis
    np.testing.assert_array_equal(masks[0], expected)
    np.testing.assert_array_equal(masks[1], expected)
    rows, cols = np.nonzero(masks[0])
    assert rows.mean() == pytest.approx(centre[0]) and cols.mean() == pytest.approx(centre[1])
    assert np.ptp(cols) > np.ptp(rows)  # wider than tall, as the footprint
    # a C-order (transposed) reading would be wrong: check the mask really depends on the order
    assert not np.array_equal(binarize_footprints(img.ravel(order="C")[:, None], DIMS)[0], expected)


def test_binarize_footprints_rejects_wrong_size() -> None:
    with pytest.raises(ValueError, match="pixels"):
        binarize_footprints(np.ones((DIMS[0] * DIMS[1] + 1, 2)), DIMS)


def test_binarize_footprints_zero_column_is_empty() -> None:
    A = np.zeros((DIMS[0] * DIMS[1], 1))
    assert not binarize_footprints(A, DIMS).any()


def test_masks_from_coordinates_row_col_orientation() -> None:
    regions = [
        {"id": 0, "coordinates": [[2, 40], [2, 41], [3, 40]]},  # near the top right
        {"id": 1, "coordinates": [[35, 5], [-1, 5], [35, 50]]},  # two points outside the field: dropped
    ]
    masks = masks_from_coordinates(regions, DIMS)
    assert masks.shape == (2, *DIMS)
    assert sorted(zip(*np.nonzero(masks[0]), strict=True)) == [(2, 40), (2, 41), (3, 40)]
    assert sorted(zip(*np.nonzero(masks[1]), strict=True)) == [(35, 5)]


def test_coordinates_and_footprints_agree() -> None:
    # the same cell as a manual ROI and as a CaImAn footprint column scores as one match
    m = disk((12, 37), radius=4)
    regions = [{"coordinates": np.argwhere(m).tolist()}]
    A = m.astype(float).ravel(order="F")[:, None]
    s = score_masks(binarize_footprints(A, DIMS), masks_from_coordinates(regions, DIMS))
    assert s["f1"] == 1.0


def test_neurofinder_rois_score_perfectly_against_themselves() -> None:
    path = REAL / "regions.json"
    if not path.exists():
        pytest.skip(f"real data not found: {REAL} (../shared/data/real/neurofinder-01.01-crop, "
                    "outside the repository) is absent")
    regions = json.loads(path.read_text())
    masks = masks_from_coordinates(regions, (256, 256))
    assert len(masks) == len(regions) > 0
    assert masks.reshape(len(masks), -1).sum(1).min() > 0  # every ROI lies in the crop
    s = score_masks(masks, masks)
    assert (s["precision"], s["recall"], s["f1"]) == (1.0, 1.0, 1.0)
