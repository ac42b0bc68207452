"""Moving weights between mvm, transformers' VideoMAE and the original VideoMAE / VideoMAE V2 code.

``load_model(path)`` reads any of them; ``export_transformers``, ``save_original`` and ``save_mvm``
write them. transformers itself is imported only by :func:`from_hf_model`/:func:`to_hf_model`.
"""

from mvm.interop.clip import source_clip
from mvm.interop.load import (
    InteropError,
    ModelSpec,
    UnsafeCheckpointError,
    build_from_spec,
    infer_spec,
    load_model,
    save_mvm,
    spec_from_model,
)
from mvm.interop.original import mvm_to_original, original_to_mvm, save_original
from mvm.interop.transformers import (
    export_transformers,
    from_hf_model,
    import_transformers,
    mvm_to_hf,
    to_hf_model,
)

__all__ = [
    "InteropError",
    "ModelSpec",
    "UnsafeCheckpointError",
    "build_from_spec",
    "export_transformers",
    "from_hf_model",
    "import_transformers",
    "infer_spec",
    "load_model",
    "mvm_to_hf",
    "mvm_to_original",
    "original_to_mvm",
    "save_mvm",
    "save_original",
    "source_clip",
    "spec_from_model",
    "to_hf_model",
]
