"""A network replayed as CUDA graphs: inference without Python's and the driver's launch overhead.

At batch 1 a ResNet-50 EKNet spends most of its time launching a few hundred small kernels: the
GPU waits for the CPU. A CUDA graph records every kernel of one forward pass once and replays
them with one launch. A graph reads and writes fixed memory, so each captured batch size has its
own input buffer (the frame is copied into it) and output tensor (copied out after the replay).

What breaks a graph, and what happens then:
- another batch size (the last, smaller batch of a stream): a graph is captured for that size
  too, up to MAX_GRAPHS sizes; beyond that the new size runs eagerly (`eager_batches` counts it);
- a frame of another size never reaches the network: every frame is resized to the model size
  before inference (inference.to_model_input), so the input shape only varies with the batch;
- a capture that fails (an operation that cannot be captured, too little memory): that batch size
  runs eagerly from then on, and `fallback` says why.

The capture is pluggable (`capture=`), so that this logic is tested on the CPU with a stand-in
that keeps the same static-buffer contract; on CUDA it is `cuda_capture` (torch.cuda.graph).
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

MAX_GRAPHS = 4  # batch sizes captured per network; each holds its own activations' memory
WARMUP_CALLS = 2  # eager calls on a side stream before a capture, as torch.cuda.graph requires

Forward = Callable[[torch.Tensor], torch.Tensor]
Capture = Callable[[Forward, torch.Tensor], Callable[[], torch.Tensor]]


def cuda_capture(forward: Forward, static_input: torch.Tensor) -> Callable[[], torch.Tensor]:
    """Record `forward(static_input)` as a CUDA graph; return replay() -> the static output tensor."""
    stream = torch.cuda.Stream(static_input.device)
    stream.wait_stream(torch.cuda.current_stream(static_input.device))
    with torch.cuda.stream(stream):  # warm-up off the default stream: cuDNN and cuBLAS set up here
        for _ in range(WARMUP_CALLS):
            forward(static_input)
    torch.cuda.current_stream(static_input.device).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_output = forward(static_input)

    def replay() -> torch.Tensor:
        graph.replay()
        return static_output
    return replay


class GraphRunner:
    """`forward` (a tensor in, a tensor out) run through one captured graph per batch size.

    The result of a call is a fresh tensor (a clone of the graph's output), so that the caller may
    keep it while the next batch replays."""

    def __init__(self, forward: Forward, capture: Capture = cuda_capture, max_graphs: int = MAX_GRAPHS):
        self.forward, self.capture, self.max_graphs = forward, capture, max_graphs
        self.graphs: dict[tuple, tuple[torch.Tensor, Callable[[], torch.Tensor]]] = {}
        self.eager_shapes: set[tuple] = set()
        self.eager_batches = 0
        self.fallback: Optional[str] = None  # why a capture failed, if one did

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        key = (tuple(x.shape), x.dtype, x.is_contiguous(memory_format=torch.channels_last))
        if key not in self.graphs and key not in self.eager_shapes:
            self._try_capture(key, x)
        if key in self.eager_shapes:
            self.eager_batches += 1
            return self.forward(x)
        static_input, replay = self.graphs[key]
        static_input.copy_(x)
        return replay().clone()

    def _try_capture(self, key: tuple, x: torch.Tensor) -> None:
        if len(self.graphs) >= self.max_graphs:
            self.eager_shapes.add(key)
            return
        static_input = x.clone()  # clone keeps x's memory format
        try:
            self.graphs[key] = (static_input, self.capture(self.forward, static_input))
        except Exception as exc:  # noqa: BLE001 - any capture failure: run that shape eagerly, say why
            self.eager_shapes.add(key)
            self.fallback = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:160]}"

    def describe(self) -> dict:
        """What summary.json records: the captured batch sizes and what ran eagerly."""
        return {"captured_batches": sorted(k[0][0] for k in self.graphs), "eager_batches": self.eager_batches,
                "max_graphs": self.max_graphs, "fallback": self.fallback}
