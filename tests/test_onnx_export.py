"""Every zoo net exports with torch.onnx.export and ONNX Runtime reproduces the eager outputs (issue 18).

Needs the ``bench`` extra (onnx, onnxruntime: ``make bench-setup``); without it the module is skipped.
"""

from __future__ import annotations

import pytest
import torch

onnx = pytest.importorskip("onnx", reason="onnx not installed (the bench extra: make bench-setup)")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed (the bench extra: make bench-setup)")

from facelab.models import MODELS  # noqa: E402
from facelab.models.export import (  # noqa: E402
    MTCNN_STAGES, NOT_EXPORTABLE, example_input, export_onnx, exportable_names, is_image_model, load_view,
)

#: smaller than the benchmark sizes, to keep the test fast; not multiples of 32 on purpose (TF 'same' pads)
IMAGE, CROP = (200, 300), (100, 90)
#: ORT against eager: |Δ| <= RTOL * max(1, max |eager|) per output (observed <= 6e-6 on every net)
RTOL = 1e-4


def _session(data: bytes) -> "ort.InferenceSession":
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


def test_every_zoo_net_is_covered():
    names = set(exportable_names())
    assert names | set(NOT_EXPORTABLE) == set(MODELS) | set(MTCNN_STAGES)
    assert not names & set(NOT_EXPORTABLE)


def test_haar_has_nothing_to_export():
    with pytest.raises(ValueError, match="haar: not exportable"):
        load_view("haar")


@pytest.mark.parametrize("name", exportable_names())
def test_onnx_runtime_matches_eager(name):
    view = load_view(name)
    image_model = is_image_model(name)
    x = example_input(name, batch=1 if image_model else 2, size=IMAGE if image_model else CROP)
    data = export_onnx(view, x)
    model = onnx.load_from_string(data)
    onnx.checker.check_model(model)
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == list(x.shape)
    got = _session(data).run(None, {"images": x.numpy()})
    with torch.no_grad():
        ref = view(x)
    assert len(got) == len(ref)
    for g, r in zip(got, ref):
        g = torch.from_numpy(g)
        assert g.shape == r.shape
        assert torch.isfinite(r).all()
        err = float((g - r.to(g.dtype)).abs().max())
        assert err <= RTOL * max(1.0, float(r.abs().max())), f"{name}: max |ORT - eager| = {err:.3g}"


def test_export_carries_the_current_weights():
    """A changed weight changes the exported graph's output to the eager module's new output."""
    view = load_view("mtcnn_onet")
    x = example_input("mtcnn_onet", batch=2)
    before = _session(export_onnx(view, x)).run(None, {"images": x.numpy()})
    with torch.no_grad():
        for p in view.parameters():
            if p.dim() == 2:  # the fully connected layers
                p.mul_(-0.5)
        ref = view(x)
    after = _session(export_onnx(view, x)).run(None, {"images": x.numpy()})
    for b, a, r in zip(before, after, ref):
        b, a = torch.from_numpy(b), torch.from_numpy(a)
        assert (a - b).abs().max() > 0.1 * b.abs().max()
        assert torch.allclose(a, r, rtol=0, atol=RTOL * max(1.0, float(r.abs().max())))
