"""Optional ``torch.compile`` of a model (config key ``train.compile``), with a logged fallback to eager.

``torch.compile`` is lazy: wrapping never fails, the first forward does (no C++ compiler for the
CPU backend, no Triton for an old GPU, an op dynamo cannot trace). :func:`maybe_compile` therefore
returns a thin wrapper that runs the compiled module and, if the compilation itself fails, logs
the reason once and runs the plain module from then on. Parameters are shared, so the optimiser,
checkpoints and ``state_dict`` keys are unaffected (the wrapper's keys are the model's own, without
the ``_orig_mod.`` prefix that ``torch.compile``'s ``OptimizedModule`` would add).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)


class CompiledModule(nn.Module):
    """Runs ``torch.compile(module)``; falls back to ``module`` for good at the first compile failure.

    Attributes:
        module: the plain model (its ``state_dict`` is this wrapper's, key for key).
        compiled: True while the compiled path is in use.
        error: why compilation failed, or None.
    """

    def __init__(self, module: nn.Module, **compile_kwargs: Any) -> None:
        super().__init__()
        self.module = module
        self._compiled = torch.compile(module, **compile_kwargs)
        self.compiled = True
        self.error: str | None = None

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self.compiled:
            try:
                return self._compiled(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - any compiler failure means: run eager
                if not _is_compile_error(exc):
                    raise
                self.compiled = False
                self.error = _describe(exc)
                log.warning("torch.compile failed (%s); running the model eagerly", self.error)
        return self.module(*args, **kwargs)

    # Checkpoints and exports see the plain model's names.
    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return self.module.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        return self.module.load_state_dict(state_dict, strict=strict, assign=assign)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("module"), name)


def _describe(exc: BaseException) -> str:
    """One line: the exception's type and first line, and the root cause a compiler wrapper hides."""
    def line(e: BaseException) -> str:
        text = str(e).strip()
        return f"{type(e).__name__}: {text.splitlines()[0][:300] if text else ''}"

    cause = getattr(exc, "inner_exception", None) or exc.__cause__
    return line(exc) + (f" <- {line(cause)}" if cause is not None and cause is not exc else "")


def _is_compile_error(exc: BaseException) -> bool:
    """Whether ``exc`` comes from the compiler stack (dynamo, inductor, a C++/Triton toolchain)
    rather than from the model itself (a shape error in user input stays an error)."""
    mod = type(exc).__module__ or ""
    if mod.startswith(("torch._dynamo", "torch._inductor", "torch._subclasses", "triton")):
        return True
    text = f"{type(exc).__name__} {exc}"
    return any(s in text for s in ("BackendCompilerFailed", "InductorError", "CppCompileError",
                                   "Compiler: cc", "No working C compiler", "triton", "Unsupported"))


def compile_available(device: torch.device | str) -> tuple[bool, str]:
    """Whether ``torch.compile`` can build a kernel on ``device`` here; and the reason if not.

    Compiles and runs a two-op function once (a second or two on first use).
    """
    device = torch.device(device)
    try:
        fn = torch.compile(lambda x: torch.relu(x) * 2 + 1, dynamic=False)
        x = torch.randn(8, device=device)
        ok = torch.allclose(fn(x), torch.relu(x) * 2 + 1)
        return ok, "" if ok else "compiled result differs from eager"
    except Exception as exc:  # noqa: BLE001 - report any failure as "not available"
        return False, _describe(exc)


def maybe_compile(model: nn.Module, enabled: bool, device: torch.device | str | None = None,
                  **compile_kwargs: Any) -> nn.Module:
    """``model`` wrapped for ``torch.compile`` when ``enabled``, else ``model`` itself.

    Args:
        model: the plain model, already on its device.
        enabled: ``cfg.train.compile``.
        device: where it runs (only logged; compile works on CPU and CUDA).
        compile_kwargs: passed to ``torch.compile`` (e.g. ``mode="max-autotune"``).

    Returns:
        A :class:`CompiledModule` (same parameters, same ``state_dict`` keys) or ``model``.
        Compilation happens at the first forward; if it fails there, the wrapper logs why and
        runs eagerly from then on.
    """
    if not enabled:
        return model
    log.info("torch.compile enabled for %s on %s", type(model).__name__, device or "its device")
    return CompiledModule(model, **compile_kwargs)
