"""Which ONNX operators TensorRT's ONNX parser imports, to catch an unbuildable graph before it meets a GPU.

The list is the operator support matrix of onnx-tensorrt's docs/operators.md for TensorRT 10.15 (every row marked
Y). Per-operator restrictions in that table (e.g. Resize modes, constant ``axes``) are not checked here: the
parser itself reports those when the engine is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import onnx

SOURCE = "onnx-tensorrt docs/operators.md, TensorRT 10.15"
OPSET_RANGE = (9, 24)  # "TensorRT 10.15 supports operators in the inclusive range of opset 9 to opset 24"

SUPPORTED_OPS = frozenset(
    """
    Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh Attention AveragePool BatchNormalization
    BlackmanWindow Cast CastLike Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum
    DeformConv DepthToSpace DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor
    Gather GatherElements GatherND Gelu Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual
    GridSample GroupNormalization GRU HammingWindow HannWindow HardSigmoid HardSwish Hardmax Identity If
    ImageScaler InstanceNormalization IsInf IsNaN LayerNormalization LeakyRelu Less LessOrEqual Log LogSoftmax Loop
    LRN LSTM LpNormalization LpPool MatMul Max MaxPool Mean MeanVarianceNormalization Min Mish Mod Mul Neg
    NonMaxSuppression NonZero Not OneHot Or Pad ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal
    RandomNormalLike RandomUniform RandomUniformLike Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum
    ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize
    ReverseSequence RMSNormalization RNN RoiAlign RotaryEmbedding Round STFT ScaledTanh Scan Scatter
    ScatterElements ScatterND Selu Shape Shrink Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign
    SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh TensorScatter ThresholdedRelu Tile TopK Transpose Trilu
    Unsqueeze Upsample Where Xor
    """.split()
)

_DEFAULT_DOMAINS = ("", "ai.onnx")


@dataclass(frozen=True)
class OpSupport:
    opset: int
    op_types: tuple[str, ...]  # every op type in the graph, sorted
    unsupported: tuple[str, ...]  # op types (domain-qualified when not ai.onnx) the parser does not import

    @property
    def ok(self) -> bool:
        return not self.unsupported and OPSET_RANGE[0] <= self.opset <= OPSET_RANGE[1]

    def to_dict(self) -> dict[str, object]:
        return {
            "source": SOURCE,
            "opset_ok": OPSET_RANGE[0] <= self.opset <= OPSET_RANGE[1],
            "unsupported": list(self.unsupported),
        }


def _nodes(graph: onnx.GraphProto):  # a generator of onnx.NodeProto
    for node in graph.node:
        yield node
        for attr in node.attribute:  # If / Loop / Scan bodies are graphs too
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from _nodes(sub)


def check_model(model: onnx.ModelProto | Path) -> OpSupport:
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model), load_external_data=False)
    opset = next((o.version for o in model.opset_import if o.domain in _DEFAULT_DOMAINS), 0)
    types, unsupported = set(), set()
    for node in _nodes(model.graph):
        default = node.domain in _DEFAULT_DOMAINS
        op = node.op_type if default else f"{node.domain}::{node.op_type}"
        types.add(op)
        if not default or node.op_type not in SUPPORTED_OPS:
            unsupported.add(op)
    return OpSupport(opset, tuple(sorted(types)), tuple(sorted(unsupported)))
