"""How an hf_ssl model folder is laid out, so that plain transformers loads it without a word and hf_ssl loads it whole.

- ``config.json``: the encoder's config (``model_type`` ``vit``, ``bert``, ``wav2vec2``, ...) with the extra field
  ``ssl_config`` (the method's settings).
- ``model.safetensors`` (or its shards and index): exactly the weights of the published model, under the encoder's
  native prefix (``vit.``, ``bert.``, ``wav2vec2.``, ``timm_model.``), plus the heads its vanilla class serves (BERT's
  masked-LM head, for ``pipeline("fill-mask")``). ``AutoModel.from_pretrained(folder)`` therefore loads with no
  unexpected and no missing key: transformers prints no load report.
- ``ssl_state.safetensors``: every other tensor the method trains or keeps (student, projection and prediction heads,
  DINO's centre, MoCo's queue, MAE's decoder, wav2vec 2.0's quantizer). Plain transformers never opens it;
  :meth:`hf_ssl.methods.base.SSLPreTrainedModel.from_pretrained` (and ``AutoSSLModel``) reads it with the root weights
  and restores the whole pretraining model.

Weights that the vanilla class builds but the method never uses (``ViTModel``'s tanh pooler: hf_ssl builds vision
encoders without it, so that DDP sees no parameter without gradient) are written at the root at transformers' own
initialisation, seeded, so that vanilla loading is complete and reproducible; their names are listed in the metadata
of ``ssl_state.safetensors`` (``vanilla_only``) and hf_ssl skips them when it loads the folder.

Folders of the earlier layout (one ``model.safetensors`` holding every weight, no ``ssl_state.safetensors``) load with
hf_ssl as before. Names on disk are the ones ``save_pretrained`` writes (transformers' legacy names of converted
architectures), in both files, so loading applies transformers' key conversions to the method's state too.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModel, PreTrainedModel
from transformers.core_model_loading import revert_weight_conversion
from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME, cached_file
from transformers.utils.hub import get_checkpoint_shard_files

#: The file beside the published weights that holds the rest of the method's state.
SSL_STATE_NAME = "ssl_state.safetensors"
#: Metadata field of :data:`SSL_STATE_NAME`: the JSON list of root weights that only vanilla classes load.
VANILLA_ONLY_FIELD = "vanilla_only"
#: ``from_pretrained`` keyword arguments that say where and how to fetch files (they apply to every file read).
HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder", "proxies")


def is_published(key: str, prefixes: Iterable[str]) -> bool:
    """Whether weight ``key`` sits under one of ``prefixes`` (module paths such as ``vit`` or ``cls.predictions``)."""
    return any(key == prefix or key.startswith(prefix + ".") for prefix in prefixes)


def encoder_prefixes(model: nn.Module, encoder: nn.Module) -> tuple[str, ...]:
    """The top-level names of ``model`` whose every tensor belongs to ``encoder`` (``("vit",)`` for DINO's teacher,
    the four towers and ``logit_scale`` of a dual encoder)."""
    encoder_tensors = {id(tensor) for tensor in encoder.state_dict(keep_vars=True).values()}
    names = []
    for name, child in model.named_children():
        tensors = list(child.state_dict(keep_vars=True).values())
        if tensors and all(id(tensor) in encoder_tensors for tensor in tensors):
            names.append(name)
    for name, tensor in [*model.named_parameters(recurse=False), *model.named_buffers(recurse=False)]:
        if id(tensor) in encoder_tensors:
            names.append(name)
    return tuple(names)


def vanilla_only_weights(model: PreTrainedModel, encoder: PreTrainedModel) -> dict[str, torch.Tensor]:
    """Weights that ``AutoModel`` builds for ``encoder.config`` and ``encoder`` lacks, at transformers' initialisation
    with seed 0 (the same values at every save; the global random state is left untouched), under ``model``'s names.

    ``{}`` when the encoder already is the complete vanilla model (BERT with its pooler, wav2vec 2.0, dual encoders).
    """
    try:
        with torch.device("meta"):  # key names only, no memory
            vanilla = AutoModel.from_config(encoder.config)
    except (ValueError, KeyError):  # a config AutoModel cannot build: nothing to complete
        return {}
    ours = encoder.state_dict()
    missing = [key for key in vanilla.state_dict() if key not in ours]
    if not missing:
        return {}
    prefix = next((name + "." for name, child in model.named_children() if child is encoder), "")
    dtype = next(encoder.parameters()).dtype
    weights = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for module_name in sorted({key.rpartition(".")[0] for key in missing}):
            module = vanilla.get_submodule(module_name)
            module.to_empty(device="cpu", recurse=False)
            vanilla._init_weights(module)
            for name, tensor in module.state_dict().items():
                key = f"{module_name}.{name}" if module_name else name
                if key in missing:
                    weights[prefix + key] = tensor.detach().to(dtype).clone()
    return weights


def split_published_root(directory: str | Path, prefixes: Iterable[str], vanilla_only: Iterable[str] = ()) -> None:
    """Rewrite the weights ``save_pretrained`` wrote into ``directory`` to the published layout: keep the keys under
    ``prefixes`` (and the ``vanilla_only`` names) in ``model.safetensors`` (or its shards), move every other one to
    :data:`SSL_STATE_NAME`.

    Weights saved as ``pytorch_model.bin`` are left as they are (the earlier, full layout), as is a folder none of
    whose keys is published (a root without the encoder would load nothing).
    """
    directory = Path(directory)
    prefixes, vanilla_only = tuple(prefixes), sorted(vanilla_only)
    index_path = directory / SAFE_WEIGHTS_INDEX_NAME
    index = json.loads(index_path.read_text()) if index_path.is_file() else None
    if index is not None:
        files = sorted(set(index["weight_map"].values()))
    elif (directory / SAFE_WEIGHTS_NAME).is_file():
        files = [SAFE_WEIGHTS_NAME]
    else:
        return
    keys = {name: _keys(directory / name) for name in files}
    kept = {name: [key for key in names if key in vanilla_only or is_published(key, prefixes)]
            for name, names in keys.items()}
    if not any(kept.values()):
        return
    state: dict[str, torch.Tensor] = {}
    for name in files:
        if len(kept[name]) == len(keys[name]):
            continue
        weights = load_file(directory / name)
        root = {key: weights.pop(key) for key in kept[name]}
        state.update(weights)
        if root:
            save_file(root, directory / name, metadata={"format": "pt"})
        else:
            (directory / name).unlink()
        if index is not None:
            for key in weights:
                index["weight_map"].pop(key)
    if index is not None:
        index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    # Written even without tensors when the root holds vanilla-only weights: its metadata tells hf_ssl to skip them.
    state_path = directory / SSL_STATE_NAME
    if state or vanilla_only:
        save_file(state, state_path, metadata={"format": "pt", VANILLA_ONLY_FIELD: json.dumps(vanilla_only)})
    elif state_path.is_file():  # a model with no method state saved over one that had some
        state_path.unlink()


def published_names(model: PreTrainedModel, weights: dict[str, torch.Tensor]) -> list[str]:
    """The names ``save_pretrained`` gives ``weights`` on disk (transformers' legacy names of converted
    architectures)."""
    return sorted(revert_weight_conversion(model, dict(weights)))


def load_published_layout(path_or_repo: str, **hub_kwargs) -> dict[str, torch.Tensor] | None:
    """Every weight of a published-layout folder or Hub repository, under its names on disk: the root's (without the
    ``vanilla_only`` ones) and :data:`SSL_STATE_NAME`'s. ``None`` for a folder of the earlier, full layout."""
    state_file = cached_file(path_or_repo, SSL_STATE_NAME, _raise_exceptions_for_missing_entries=False,
                             _raise_exceptions_for_connection_errors=False, **hub_kwargs)
    if state_file is None:
        return None
    root = cached_file(path_or_repo, SAFE_WEIGHTS_NAME, _raise_exceptions_for_missing_entries=False,
                       _raise_exceptions_for_connection_errors=False, **hub_kwargs)
    if root is not None:
        root_files = [root]
    else:
        index = cached_file(path_or_repo, SAFE_WEIGHTS_INDEX_NAME, **hub_kwargs)
        root_files, _ = get_checkpoint_shard_files(path_or_repo, index, **hub_kwargs)
    with safe_open(state_file, framework="pt") as handle:
        vanilla_only = set(json.loads((handle.metadata() or {}).get(VANILLA_ONLY_FIELD, "[]")))
    state: dict[str, torch.Tensor] = {}
    for file in root_files:
        state.update({key: value for key, value in load_file(file).items() if key not in vanilla_only})
    state.update(load_file(state_file))
    return state


def _keys(path: Path) -> list[str]:
    with safe_open(str(path), framework="pt") as handle:
        return list(handle.keys())
