"""Anchors, matching, IoU loss and group sampling of facelab.models.detection on hand-computed cases."""

from __future__ import annotations

import pytest
import torch

from facelab.models.detection.anchors import cell_anchors, grid_anchors, multi_level_anchors
from facelab.models.detection.losses import group_sample, hard_negative_mining, iou_ls_loss, pairwise_iou
from facelab.models.detection.matching import match_anchors


def test_grid_anchors_hand_computed():
    a = grid_anchors(2, 3, 4, (16, 32))
    assert a.shape == (2 * 3 * 2, 4)
    # cell (0,0): centre (2,2); sizes 16 then 32
    assert a[0].tolist() == [-6, -6, 10, 10]
    assert a[1].tolist() == [-14, -14, 18, 18]
    # cell (y=1, x=2): index (1*3+2)*2 = 10, centre (10, 6)
    assert a[10].tolist() == [2, -2, 18, 14]
    assert cell_anchors((16,), (4.0,)).tolist() == [[-4, -16, 4, 16]]  # ratio = h/w, area kept
    with pytest.raises(ValueError, match="positive"):
        grid_anchors(0, 3, 4, (16,))


def test_multi_level_groups():
    a, g = multi_level_anchors([(1, 1), (1, 2)], (8, 16), ((16, 20), (32,)))
    assert a.shape == (1 * 2 + 2 * 1, 4)
    assert g.tolist() == [0, 1, 2, 2]
    assert a[2].tolist() == [-8, -8, 24, 24]


def test_match_anchors_thresholds():
    anchors = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 7], [0, 0, 10, 5], [20, 20, 30, 30], [0, 0, 10, 3]],
                           dtype=torch.float)
    gt = torch.tensor([[0, 0, 10, 10]], dtype=torch.float)
    labels, matched, iou = match_anchors(anchors, gt, 0.6, 0.4, best_anchor_per_gt=False)
    # IoUs 1.0, 0.7, 0.5, 0, 0.3
    assert torch.allclose(iou, torch.tensor([1.0, 0.7, 0.5, 0.0, 0.3]))
    assert labels.tolist() == [1, 1, -1, 0, 0]
    assert matched[:2].tolist() == [0, 0]


def test_match_best_anchor_per_gt_and_empty():
    anchors = torch.tensor([[0, 0, 16, 16], [16, 0, 32, 16]], dtype=torch.float)
    gt = torch.tensor([[100, 100, 104, 104], [2, 2, 8, 8]], dtype=torch.float)  # 2nd: IoU 36/256 with anchor 0
    labels, matched, _ = match_anchors(anchors, gt)
    assert labels.tolist() == [1, 0] and matched[0] == 1
    labels, _, _ = match_anchors(anchors, gt, best_anchor_per_gt=False)
    assert labels.tolist() == [0, 0]
    labels, _, _ = match_anchors(anchors, torch.zeros(0, 4))
    assert labels.tolist() == [0, 0]
    with pytest.raises(ValueError, match="gt_boxes"):
        match_anchors(anchors, torch.zeros(3))


def test_iou_loss_known_boxes():
    a = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]])
    b = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 5], [20, 20, 30, 30]])
    assert torch.allclose(pairwise_iou(a, b), torch.tensor([1.0, 0.5, 0.0]), atol=1e-6)
    assert iou_ls_loss(a, b).item() == pytest.approx((0 + 0.25 + 1) / 3, abs=1e-6)
    p = a[1:2].clone().requires_grad_(True)
    iou_ls_loss(p, b[1:2]).backward()
    assert p.grad[0, 3] > 0  # shrinking y2 towards 5 reduces the loss
    assert iou_ls_loss(a[:0], b[:0]).item() == 0


def test_group_sampling_balances_scales():
    g = torch.arange(4).repeat(100)  # 4 scale groups, 100 anchors each
    labels = torch.zeros(400, dtype=torch.long)
    labels[(g == 0).nonzero()[:50].flatten()] = 1  # group 0: 50 positives
    labels[(g == 1).nonzero()[:3].flatten()] = 1  # group 1: 3 positives
    labels[(g == 2).nonzero()[:10].flatten()] = -1  # group 2: 10 ignored, no positive
    pos, neg = group_sample(labels, g, per_group=32, generator=torch.Generator().manual_seed(0))
    for k, (npos, nneg) in enumerate([(8, 24), (3, 29), (0, 32), (0, 32)]):
        assert int((g[pos] == k).sum()) == npos and int((g[neg] == k).sum()) == nneg
    assert (labels[pos] == 1).all() and (labels[neg] == 0).all()
    assert len(set(pos.tolist())) == pos.numel() and len(set(neg.tolist())) == neg.numel()


def test_hard_negative_mining_picks_highest_loss():
    labels = torch.tensor([1, 0, 0, 0, 0, 0, -1])
    loss = torch.tensor([9.0, 0.1, 5.0, 0.2, 4.0, 3.0, 100.0])
    assert sorted(hard_negative_mining(loss, labels, ratio=3, min_neg=1).tolist()) == [2, 4, 5]
