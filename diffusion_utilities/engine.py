"""The engine: what makes the course's algorithms fast, kept apart from them.

Nothing here changes what is computed (bf16 aside, which is never a default); it changes how:
    inference_copy      BatchNorm folded into the convolutions, channels_last memory layout
    SamplingRun         what sample() runs on: the network as a plain function net(x, t), made fast
                        (SamplingNetwork: folded, optionally bfloat16 or compiled, and on a GPU replayed
                        from a CUDA graph), the noise, and the memory check
    training_forward    the network as the training step calls it: channels_last input, bf16 autocast
    GraphedTrainStep    a whole training step (forward, backward, Adam) replayed from a CUDA graph
    make_optimizer      Adam, fused into one kernel on a GPU

``sampling.sample`` and ``training.train`` use these by default where they pay off; read those
modules first: the algorithms are there, and this one can be skipped on a first reading.
"""

from __future__ import annotations

import copy
import itertools
import weakref

import torch
import torch.nn as nn

from .errors import BadInput
from .memory import check_sampling_memory
from .model import ContextUnet, ResidualConvBlock

__all__ = ["PRECISIONS", "COMPILE_MODES", "inference_copy", "cached_inference_copy", "SamplingRun", "SamplingNetwork",
           "derived_network", "capture_cuda_graph", "cuda_generator", "training_forward", "GraphedTrainStep",
           "make_optimizer", "set_lr"]

PRECISIONS = ("fp32", "bf16")
# torch.compile modes for sampling's network: "max-autotune" is torch's "max-autotune-no-cudagraphs",
# since SamplingNetwork captures its own CUDA graph around the compiled network
COMPILE_MODES = {"default": None, "max-autotune": "max-autotune-no-cudagraphs"}


@torch.no_grad()
def inference_copy(model: ContextUnet, channels_last: bool = True) -> ContextUnet:
    """A copy of an eval-mode model for sampling, each BatchNorm folded into the conv before it.

    In eval mode BatchNorm is a fixed affine map y = γ·(z − μ)/√(σ² + ε) + β of the conv's
    output z = W∗x + b, so it folds into the conv: W' = s·W, b' = s·(b − μ) + β with
    s = γ/√(σ² + ε). One pass over each activation fewer; the outputs agree to float rounding.
    The model itself is not changed. A model in training mode (batch statistics) is returned as is.
    """
    if model.training:
        return model
    fused = copy.deepcopy(model)
    for block in fused.modules():
        if isinstance(block, ResidualConvBlock):
            for layer in (block.conv1, block.conv2):
                conv, bn = layer[0], layer[1]
                s = bn.weight / torch.sqrt(bn.running_var + bn.eps)
                conv.weight.mul_(s[:, None, None, None])
                conv.bias.copy_((conv.bias - bn.running_mean) * s + bn.bias)
                layer[1] = nn.Identity()
    if channels_last:
        fused = fused.to(memory_format=torch.channels_last)
    return fused.eval().requires_grad_(False)


# One folded copy per live model, dropped with the model. Keyed by each weight's storage, device,
# dtype and version counter (bumped by in-place changes such as load_state_dict and most optimiser
# steps) and by each weight's sum, because PyTorch's fused Adam updates weights without bumping it.
_FOLDED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _weights_key(model: torch.nn.Module) -> tuple | None:
    weights = [w.detach() for w in itertools.chain(model.parameters(), model.buffers())]
    try:
        versions = tuple((w.data_ptr(), w._version, w.device, w.dtype) for w in weights)
    except RuntimeError:  # inference tensors (made under torch.inference_mode) keep no version: never cache
        return None
    sums = torch.stack([w.sum(dtype=torch.float64) for w in weights]).tolist()  # one read-back per call
    return versions, tuple(sums)


def cached_inference_copy(model: ContextUnet) -> ContextUnet:
    """``inference_copy(model)``, made once and reused until the model's weights change.

    Folding again on every call cost about 1% of a short run (DDIM-25 of 32 sprites on a CPU), plus the
    first forward through freshly allocated weights: docs/benchmarks.md has the timings.
    """
    if model.training:
        return model
    key = _weights_key(model)
    hit = _FOLDED.get(model)
    if key is not None and hit is not None and hit[0] == key:
        return hit[1]
    folded = inference_copy(model)
    if key is not None:
        _FOLDED[model] = (key, folded)
    return folded


class SamplingRun:
    """What ``sampling.sample`` runs on; the algorithm reads four things from it.

    schedule     the schedule on the CPU: the step rules' coefficients are then 0-dim CPU tensors,
                 and their scalar math launches no kernels
    noise(shape) z ~ N(0, I) on the model's device and in its precision, drawn with ``generator``
                 (on the generator's own device; None: the model's)
    put(tensor)  a tensor (x_T, the context) on the model's device and in its precision; None stays None
    network_fn(output, grid, x)   the network as a plain function net(x, t) of the grid's times

    sprites: how many sprites the run draws, checked against the free memory on the CPU before any
    work, doubled when ``guided`` (None: not checked). fast, cuda_graph, precision, compile:
    ``SamplingNetwork``'s.
    """

    def __init__(self, model, schedule, generator: torch.Generator | None = None, *, sprites: int | None = None,
                 guided: bool = False, fast: bool = True, cuda_graph: bool | None = None, precision: str = "fp32",
                 compile: str | None = None):
        if sprites is not None and isinstance(model, ContextUnet):  # as the CLI checks: far too many is one line, not a kill
            check_sampling_memory(model, sprites, guided, f"sampling {sprites:,} sprites at once", "sample fewer at a time")
        self.network = SamplingNetwork(model, fast=fast, cuda_graph=cuda_graph, precision=precision, compile=compile)
        self.device, self.dtype = self.network.device, self.network.dtype
        self.schedule = schedule.to("cpu")  # coefficients are 0-dim CPU tensors: no kernel launches for scalar math
        self.generator = generator

    def put(self, tensor: torch.Tensor | None) -> torch.Tensor | None:
        return None if tensor is None else tensor.to(self.device, self.dtype)  # e.g. float64 weights for a float32 model

    def noise(self, shape) -> torch.Tensor:
        """z ~ N(0, I) of ``shape``, drawn with the generator on its own device (default: the model's)."""
        g_dev = self.generator.device if self.generator is not None else self.device
        z = torch.randn(shape, generator=self.generator, device=g_dev)  # float32 always: a seed gives the same noise
        if g_dev.type == "cpu" and self.device.type == "cuda":  # CPU-drawn noise (reproducible across devices):
            return z.pin_memory().to(self.device, self.dtype, non_blocking=True)  # a pinned copy does not wait for the GPU
        return z.to(self.device, self.dtype)  # in the model's precision, e.g. float64 weights

    def network_fn(self, output, grid: list, x: torch.Tensor):
        """``output(net, x, t_model)`` (the network's output, guided) as a plain function net(x, t) of the
        times t of ``grid``, made fast as asked; x: an example of the input, (B, C, H, W).

        The model's time inputs go to the device once, not once a step, and a CUDA graph replays from
        them: net(x, t) finds t's by its place in the grid.
        """
        t_in = torch.tensor([self.schedule.model_time(t) for t in grid], device=self.device)
        at = {t: i for i, t in enumerate(grid)}
        net = self.network.predictor(output, x, t_in[:1])
        return lambda x, t: net(x, t_in[at[t]:at[t] + 1])


class SamplingNetwork:
    """The network ``sample()`` calls, made fast; its ``device`` and ``dtype`` are the model's.

    fast: the folded ``inference_copy`` (agrees with the model to float rounding); False: the model as given.
    cuda_graph: replay the network from a CUDA graph (None: on for the fast path on a CUDA device).
    precision: "bf16" runs a bfloat16 copy (float32 in and out). compile: a ``COMPILE_MODES`` key.
    Every argument is checked here, before any work.
    """

    def __init__(self, model, *, fast: bool = True, cuda_graph: bool | None = None, precision: str = "fp32",
                 compile: str | None = None):
        if precision not in PRECISIONS:
            raise BadInput(f"precision must be {' or '.join(PRECISIONS)}, got {precision!r}")
        if compile is not None and compile not in COMPILE_MODES:
            raise BadInput(f"compile must be one of {', '.join(COMPILE_MODES)} (or None), got {compile!r}")
        self.device, self.dtype = next(model.parameters()).device, next(model.parameters()).dtype
        if cuda_graph and self.device.type != "cuda":
            raise BadInput(f"cuda_graph needs the model on a CUDA device; it is on {self.device.type}")
        net = cached_inference_copy(model) if fast and isinstance(model, ContextUnet) else model
        self.cuda_graph = self.device.type == "cuda" and net is not model if cuda_graph is None else cuda_graph
        self.compile = compile
        self.net, self.made = derived_network(net, precision, compile, reuse=net is not model)

    def predictor(self, predict, x: torch.Tensor, t_model: torch.Tensor):
        """``predict(net, x, t_model)`` as a function of (x, t_model) alone, compiled (now, so that a failure
        is one line) and graph-captured as asked; x and t_model are examples of the inputs' shapes."""
        if self.compile and self.made:
            _first_compiled_call(lambda: predict(self.net, x, t_model))
        if not self.cuda_graph:
            return lambda x, t: predict(self.net, x, t)
        return _Graphed(lambda x, t: predict(self.net, x, t), x, t_model)


class _Graphed:
    """A function of (x, t) captured once in a CUDA graph and replayed each step.

    A forward pass at batch 32 is many small kernels; launching them one by one from Python can
    take longer than running them. A graph replays the whole pass with one launch. The inputs are
    copied into fixed buffers before each replay; the output buffer, which the next replay overwrites,
    is handed back as a copy, so that a caller may keep it (Heun's step holds one velocity while
    it asks for the next).
    """

    def __init__(self, fn, x, t):
        self.device = x.device
        self.x, self.t = x.clone(), t.clone()
        # the warm-up outside the graph lets cuDNN pick its kernels
        self.graph, self.out = capture_cuda_graph(self.device, lambda: fn(self.x, self.t))

    def __call__(self, x, t):
        with torch.cuda.device(self.device):
            self.x.copy_(x)
            self.t.copy_(t)
            self.graph.replay()
            return self.out.clone()


# The bf16 and compiled versions of each folded network, dropped with it. Only sample()'s own
# folded copies are kept: they never change (new weights make a new copy), a caller's model may.
_DERIVED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def derived_network(net, precision: str, compile: str | None, reuse: bool):
    """``net`` in bfloat16 (float32 in and out) and/or through torch.compile; returns (network, made):
    made is False when a cached one was reused."""
    key = (precision, compile)
    if reuse and key in _DERIVED.get(net, {}):
        return _DERIVED[net][key], False
    run = net
    if precision == "bf16" or (compile and reuse):
        # a copy: for bf16, weights cast once (measured faster than autocast, which casts every weight on
        # every call); for a cached compiled network, so that it holds no reference to its own key
        run = copy.deepcopy(net).to(torch.bfloat16 if precision == "bf16" else next(net.parameters()).dtype)
    if compile:
        run = torch.compile(run, mode=COMPILE_MODES[compile])
    if precision == "bf16":
        run = _bf16_io(run)
    if reuse:
        _DERIVED.setdefault(net, {})[key] = run
    return run, True


def _bf16_io(net16):
    def run(x, t_norm, c=None):
        return net16(x.to(torch.bfloat16), t_norm, None if c is None else c.to(torch.bfloat16)).float()

    return run


def _first_compiled_call(call) -> None:
    try:
        call()
    except (BadInput, torch.OutOfMemoryError, MemoryError):  # not compile's fault: as they are
        raise
    except Exception as e:  # Dynamo and Inductor raise many kinds; the learner needs one line
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise BadInput(f"torch.compile could not compile the network ({type(e).__name__}: {first}); "
                       f"sample without compile") from e


def capture_cuda_graph(device: torch.device, fn, warmups: int = 2, warm=None, before_capture=None):
    """Capture one call of ``fn`` in a CUDA graph on ``device``'s GPU; returns (graph, what fn returned).

    PyTorch's recipe: ``warm`` (default ``fn``) runs ``warmups`` times on a side stream first, so
    lazily made state and cuDNN's choices exist, then ``before_capture`` (if given), then the
    capture, on that same stream: not PyTorch's process-wide capture stream, which belongs to
    whichever GPU made the first graph. Replay inside ``torch.cuda.device(device)``.
    """
    with torch.cuda.device(device):
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(warmups):
                (warm or fn)()
        torch.cuda.current_stream(device).wait_stream(side)
        if before_capture is not None:
            before_capture()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=side):
            out = fn()
    return graph, out


def training_forward(model, precision: str = "fp32"):
    """``model`` as training's loss calls it, forward(x, t, c) -> float32 output: the input made channels_last,
    as the weights are, and for precision "bf16" the forward under bfloat16 autocast."""
    def forward(x, t, c=None):
        x = x.contiguous(memory_format=torch.channels_last)
        # no weight-cast cache: each weight is used once per forward, and a cache breaks CUDA graph capture
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=precision == "bf16", cache_enabled=False):
            out = model(x, t, c)
        return out.float()
    return forward


def cuda_generator(device: torch.device) -> torch.Generator:
    """The default generator of ``device``'s GPU ("cuda" alone: the current one), which CUDA graphs replay."""
    return torch.cuda.default_generators[device.index if device.index is not None else torch.cuda.current_device()]


class GraphedTrainStep:
    """Training steps at one batch size replayed from a CUDA graph: forward, backward and Adam in one launch.

    At batch 100 a step of this network is hundreds of short kernels, and launching them one by
    one from Python takes longer than the GPU needs to run them; a replay leaves only the GPU's
    time. ``loss_of(idx)`` is the step's loss for (B,) indices into data already on the GPU, its
    noise drawn from the GPU's default generator (None as the generator), whose seed and offset each
    replay reads and advances. Call it with (B,) indices; it returns the loss, not read back.

    PyTorch captures a training step only after warm-up steps (so Adam's state, the gradients'
    and cuDNN's choices exist); their effect on the weights, BatchNorm statistics, Adam's state and
    the generator is undone before capture, so the first replay is the run's next step.
    opt must come from ``make_optimizer(..., capturable=True)``; its lr is set with ``set_lr``.
    """

    WARMUP = 3

    def __init__(self, model, opt, loss_of, batch: int, device: torch.device):
        self.device = device
        self.idx = torch.zeros(batch, dtype=torch.long, device=device)

        def step():
            loss = loss_of(self.idx)
            loss.backward()
            opt.step()
            return loss.detach()

        def warm():
            opt.zero_grad(set_to_none=True)
            step()

        weights = {k: v.clone() for k, v in model.state_dict().items()}
        adam = {p: {k: v.clone() for k, v in st.items()} for p, st in opt.state.items()}

        def undo_warm_up():
            model.load_state_dict(weights)  # in place: the graph will use these tensors
            for p, st in opt.state.items():
                for k, v in st.items():
                    if p in adam:
                        v.copy_(adam[p][k])
                    else:  # state the warm-up made starts at zero, as Adam makes it
                        v.zero_()
            opt.zero_grad(set_to_none=True)  # the graph's backward makes its own gradients

        gen = cuda_generator(device)  # the one a capture on this GPU registers
        seed, offset = gen.initial_seed(), gen.get_offset()
        self.graph, self.loss = capture_cuda_graph(device, step, self.WARMUP, warm, undo_warm_up)
        gen.manual_seed(seed)  # in place: the graph reads this generator's state at each replay
        gen.set_offset(offset)

    def __call__(self, idx: torch.Tensor) -> torch.Tensor:
        with torch.cuda.device(self.device):
            self.idx.copy_(idx)
            self.graph.replay()
            return self.loss.clone()


def make_optimizer(model: torch.nn.Module, lr: float, device: torch.device, capturable: bool = False) -> torch.optim.Adam:
    """Adam; fused (one kernel for the whole update, PyTorch's fastest) on a GPU, where it exists.

    capturable: for a step replayed from a CUDA graph; the learning rate is then a tensor on the
    GPU that the replayed update reads (a number would be baked into the graph); set it with ``set_lr``.
    """
    if capturable:
        return torch.optim.Adam(model.parameters(), lr=torch.tensor(lr, device=device), fused=True, capturable=True)
    return torch.optim.Adam(model.parameters(), lr=lr, fused=device.type == "cuda")


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's learning rate; a tensor one (capturable Adam) is filled in place, with no host sync."""
    for g in opt.param_groups:
        if torch.is_tensor(g["lr"]):
            g["lr"].fill_(lr)
        else:
            g["lr"] = lr
