"""What a Core AI asset stores and how its functions read it, read back with coreai-core.

The program's text form names every large stored constant by its resource id (printed without
its bytes) and spells small ones out inline: a constant that two functions, or two ops, read is
one resource, or one inline value (MLIR keeps attributes unique by content). Stored bytes are
counted over the unique ones (a splat as one element), and the shared matrix is followed from its
resource to the ops that read it.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from mobilellm_export.model.config import MobileLLMConfig
from mobilellm_export.model.modeling import MobileLLM
from mobilellm_export.runtimes.manifest import Manifest

from ..contract import StorageReport, StructureCheck
from .convert import FUNCTIONS, INPUTS, state_names

_FUNCTION = re.compile(r"^\s*coreai\.graph @(\w+)\((.*)$")
_CONSTANT = re.compile(r"^\s*(%[\w#]+) = coreai\.constant dense_resource<(\w+)> : tensor<([^>]*)>")
_INLINE = re.compile(r"^\s*%[\w#]+ = coreai\.constant (dense<.*>) : tensor<([^>]*)>\s*$")
_OPERATION = re.compile(r"^\s*((?:%[\w#]+(?:, )?)+) = ([\w.]+) (.*)$")
_STATE = re.compile(r'tensor<([^>]*)>> \{MutableBuffers\.buffer_mutation = "(\w+)"')
_BYTES = {"si4": 0.5, "ui4": 0.5, "i1": 0.125, "si8": 1, "ui8": 1, "i8": 1, "f16": 2, "bf16": 2, "f32": 4,
          "si32": 4, "ui32": 4, "i32": 4, "si64": 8, "ui64": 8, "i64": 8}
# Ops a weight passes through on its way to the op that uses it.
_PASS_THROUGH = ("coreai.blockwise_shift_scale", "coreai.cast", "coreai.reshape")


def tensor_bytes(tensor_type: str, *, splat: bool = False) -> float:
    *dims, dtype = tensor_type.split("x")
    return (1 if splat else math.prod(int(d) for d in dims)) * _BYTES[dtype]


@dataclass
class Function:
    name: str
    states: dict[str, str] = field(default_factory=dict)  # state name -> tensor type
    constants: dict[str, str] = field(default_factory=dict)  # SSA name -> resource id
    users: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # SSA name -> [(op, result)]


@dataclass
class Program:
    functions: dict[str, Function]
    resources: dict[str, str]  # resource id -> tensor type
    inline: set[tuple[str, str]]  # (value, tensor type) of the constants spelt out in the program

    @property
    def stored_bytes(self) -> float:
        resources = sum(tensor_bytes(t) for t in self.resources.values())
        inline = sum(tensor_bytes(t, splat=not value.startswith(('dense<"', "dense<["))) for value, t in self.inline)
        return resources + inline

    def readers(self, resource: str) -> dict[str, tuple[str, ...]]:
        """Per function, the ops that consume `resource` (through dequantization, casts, reshapes)."""
        found: dict[str, tuple[str, ...]] = {}
        for function in self.functions.values():
            frontier = [name for name, rid in function.constants.items() if rid == resource]
            ops: set[str] = set()
            while frontier:
                for op, result in function.users.get(frontier.pop(), []):
                    if op in _PASS_THROUGH:
                        frontier.append(result)
                    else:
                        ops.add(op.removeprefix("coreai.").removeprefix("decomposable."))
            found[function.name] = tuple(sorted(ops))
        return found


def read_program(asset: Path) -> Program:
    """The asset's program, parsed once per version of its file (verify reads it for the storage
    report and again for the structure checks)."""
    program_file = Path(asset) / "main.mlirb"
    stat = program_file.stat()
    return _parse(str(asset), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=2)
def _parse(asset: str, _mtime_ns: int, _size: int) -> Program:
    from coreai.authoring import AIModelAsset

    operation = AIModelAsset.load(asset).program._module._mlir_module.operation
    text = operation.get_asm(large_resource_limit=16)  # resources' bytes left out
    functions: dict[str, Function] = {}
    resources: dict[str, str] = {}
    inline: set[tuple[str, str]] = set()
    current: Function | None = None
    for line in text.splitlines():
        if match := _FUNCTION.match(line):
            current = functions.setdefault(match.group(1), Function(match.group(1)))
            current.states = {name: shape for shape, name in _STATE.findall(match.group(2))}
            continue
        if current is None:
            continue
        if match := _CONSTANT.match(line):
            current.constants[match.group(1)] = match.group(2)
            resources[match.group(2)] = match.group(3)
        elif match := _INLINE.match(line):
            inline.add((match.group(1), match.group(2)))
        elif match := _OPERATION.match(line):
            result = match.group(1).split(", ")[-1]
            operands = re.findall(r"%[\w#]+", match.group(3).split(" : ")[0])
            for operand in operands:
                current.users.setdefault(operand, []).append((match.group(2), result))
    return Program(functions, resources, inline)


def inspect_storage(manifest: Manifest) -> StorageReport:
    program = read_program(manifest.path("aimodel"))
    config, context = manifest.model.config, manifest.runtime.max_context
    dim, vocab = config["dim"], config["vocab_size"]
    stored = program.stored_bytes
    shapes = (f"{dim}x{vocab}", f"{vocab}x{dim}")
    shared = [rid for rid, t in program.resources.items() if t.rsplit("x", 1)[0] in shapes]
    readers = {rid: program.readers(rid) for rid in shared}
    # Once: one stored matrix, read in every function by the lookup (a gather) and the output
    # projection (a matmul).
    once = len(shared) == 1 and all(
        any("gather" in op for op in ops) and any("matmul" in op for op in ops)
        for ops in readers[shared[0]].values())
    compute = 4 if manifest.details.get("compute_precision") == "fp32" else 2
    rope = 2 * context * config["head_dim"] * compute  # cos and sin tables
    if MobileLLMConfig.from_dict(config).temperature_tuned:
        rope += context * compute  # NoPE blocks' temperature table
    # Norm weights are in the compute type; the expected figure counts them fp32 for integer
    # schemes and fp16 for the fp16 scheme.
    norms = (2 * config["n_layers"] + 1) * dim
    norm_width = 2 if manifest.quantization["linear"]["bits"] == 16 else 4
    non_weight = rope + 4 * context + norms * (compute - norm_width)
    return StorageReport(stored_bytes=round(stored), non_weight_bytes=non_weight, shared_matrix_once=once,
                         shared_matrix_readers={f"{rid} [{program.resources[rid]}]": tuple(
                             f"{fn}: {'+'.join(ops)}" for fn, ops in readers[rid].items()) for rid in shared})


def check_structure(manifest: Manifest, reference: MobileLLM) -> list[StructureCheck]:
    """The functions, inputs and states the apps and our runtime rely on."""
    from coreai.authoring import AIModelAsset

    config = reference.config
    context = manifest.runtime.max_context
    summary = AIModelAsset.load(str(manifest.path("aimodel"))).summary()
    program = read_program(manifest.path("aimodel"))
    names = tuple(summary.function_names)
    inputs = {fn: [name for name, _ in summary.function_inputs(fn)] for fn in names}
    interface_ok = set(FUNCTIONS) <= set(names) and all(inputs[fn] == list(INPUTS) for fn in FUNCTIONS)
    checks = [StructureCheck("interface", interface_ok, f"functions {', '.join(names)}; inputs "
                             + "; ".join(f"{fn}: {', '.join(inputs[fn])}" for fn in names))]
    want = state_names(config.n_executed_layers)
    shape = f"1x{config.n_kv_heads}x{context}x{config.head_dim}xf16"
    per_function = {fn: program.functions[fn].states for fn in FUNCTIONS if fn in program.functions}
    states_ok = len(per_function) == len(FUNCTIONS) and all(
        sorted(states) == sorted(want) and set(states.values()) == {shape} for states in per_function.values())
    checks.append(StructureCheck("states", states_ok, f"{len(want)} fp16 states [{shape.rsplit('x', 1)[0]}] in "
                                 f"{' and '.join(per_function)} (2 per executed block: {config.n_executed_layers})"))
    return checks
