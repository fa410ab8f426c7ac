"""The run record: everything a model card needs about a run, written next to the weights, and read back."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import EvalResult

from ..methods import METHOD_REGISTRY
from ..semi.base import SEMI_METHOD_REGISTRY

RUN_RECORD = "hf_ssl_run.json"


EVAL_RESULTS = "eval_results.json"


TRAINING_CURVES = "training_curves.png"


FIGURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".svg")


#: Record key of what publishing added after the run: ``{"hub_model_id": ..., "license": ...}`` (the repository the
#: run was pushed to and the licence stated then), so later cards, and the cards of runs that start from this one,
#: name them.
PUBLICATION = "publication"


#: Record keys that are not argument sections (``figures``: the figure files a job saved, by name).
RECORD_META_KEYS = frozenset(
    {"job", "method", "training", "world_size", "global_batch_size", "hardware", "wall_time_seconds", "argv",
     "figures", PUBLICATION}
)


DATASET_KEYS = ("dataset", "dataset_name", "data_dir", "train_file", "corpus")


@dataclass
class RunDirectory:
    """Everything a card reads from one run directory (see the module docstring)."""

    path: Path
    config: dict[str, Any]
    record: dict[str, Any]
    evaluation: dict[str, Any]
    log_history: list[dict[str, Any]]

    @classmethod
    def load(cls, path: str | Path) -> RunDirectory:
        path = Path(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"{path} holds no config.json: point at the output_dir of a run (hf-ssl pretrain --output_dir ...), "
                "where the final model is saved"
            )
        config = _read_json(path / "config.json")
        record = _read_json(path / RUN_RECORD, {})
        semi_supervised = str(record.get("job", "")).startswith("semi_")
        if not isinstance(config.get("ssl_config"), dict) and not semi_supervised:
            raise ValueError(f"{path}/config.json has no ssl_config and {path} no semi-supervised run record: it is not "
                             "the output of an hf_ssl run")
        return cls(path, config, record, _read_json(path / EVAL_RESULTS, {}), _log_history(path))

    # ----------------------------------------------------------------------------------------------------------------
    @property
    def semi_supervised(self) -> bool:
        """A classifier fine-tuned by a semi-supervised job (its method is in the run record, not in the config)."""
        return str(self.record.get("job", "")).startswith("semi_")

    @property
    def method_settings(self) -> dict[str, Any]:
        """The method's settings: ``config.ssl_config`` of a pretraining model, the run record's for a classifier."""
        return self.record.get("method", {}) if self.semi_supervised else self.config["ssl_config"]

    @property
    def method(self) -> str:
        return self.method_settings["method"]

    @property
    def method_class(self):
        """The method's class in this hf_ssl (``None`` for a method it does not have)."""
        return (SEMI_METHOD_REGISTRY if self.semi_supervised else METHOD_REGISTRY).get(self.method)

    @property
    def job(self) -> str:
        """The kind of data the run trained on (``image``, ``masked_image``, ``text``, ``sentence_pairs``,
        ``image_text``, ``audio``): the run record's, else the one its method names."""
        method_class = METHOD_REGISTRY.get(self.method)
        return self.record.get("job") or (method_class.pretraining_job if method_class is not None else "image")

    @property
    def argument_sections(self) -> dict[str, dict[str, Any]]:
        """The job's argument sections of the record (``encoder``, ``data``, ``views``, ...), in record order."""
        return {key: value for key, value in self.record.items()
                if key not in RECORD_META_KEYS and isinstance(value, dict)}

    @property
    def eval_results(self) -> list[EvalResult]:
        return eval_results_from_json(self.evaluation.get("eval_results", []))

    @property
    def steps(self) -> int | None:
        if "pretraining_steps" in self.evaluation:
            return int(self.evaluation["pretraining_steps"])
        steps = [entry["step"] for entry in self.log_history if "step" in entry]
        return max(steps) if steps else None

    @property
    def epochs(self) -> float | None:
        epochs = [entry["epoch"] for entry in self.log_history if "epoch" in entry]
        return max(epochs) if epochs else None

    def data_section(self) -> dict[str, Any]:
        for section in self.argument_sections.values():
            if any(key in section for key in DATASET_KEYS):
                return section
        return {}

    def training_data(self) -> list[str]:
        """The training data as recorded: one value per corpus (a list, or a comma-separated ``--dataset``)."""
        section = self.data_section()
        value = next((section[key] for key in DATASET_KEYS if section.get(key)), None)
        if value is None:
            return []
        values = value if isinstance(value, (list, tuple)) else str(value).split(",")
        return [str(item).strip() for item in values if str(item).strip()]

    def figures(self) -> list[Path]:
        """Figures the job saved at the top of the run directory (the training curves are drawn separately)."""
        return sorted(p for p in self.path.iterdir()
                      if p.suffix.lower() in FIGURE_SUFFIXES and p.name != TRAINING_CURVES and p.is_file())


def _read_json(path: Path, default: Any = None) -> Any:
    if not path.is_file():
        if default is None:
            raise FileNotFoundError(path)
        return default
    return json.loads(path.read_text())


def _log_history(path: Path) -> list[dict[str, Any]]:
    """``log_history`` of ``trainer_state.json`` at the root (written by run()), else of the last checkpoint."""
    candidates = [path / "trainer_state.json"]
    checkpoints = sorted(path.glob("checkpoint-*/trainer_state.json"),
                         key=lambda p: int(p.parent.name.split("-")[-1]) if p.parent.name.split("-")[-1].isdigit()
                         else -1)
    candidates += list(reversed(checkpoints))
    for candidate in candidates:
        if candidate.is_file():
            return json.loads(candidate.read_text()).get("log_history", [])
    return []


def settings_to_argv(values: dict) -> list[str]:
    argv: list[str] = []
    for key, value in values.items():
        if value is None:
            continue
        argv.append(f"--{key}")
        if isinstance(value, (list, tuple)):
            argv.extend(str(item) for item in value)
        elif isinstance(value, dict):
            argv.append(json.dumps(value))
        elif isinstance(value, bool):
            argv.append(str(value).lower())
        else:
            argv.append(str(value))
    return argv


def write_run_record(
    output_dir,
    *,
    job_name: str,
    sections: dict[str, dict[str, Any]],
    method_config,
    training_args,
    global_batch_size: int,
    seconds: float,
    argv: list[str] | None = None,
) -> None:
    """Everything a model card needs about the run, next to the weights: the job and its argument ``sections``, the
    method's settings, the training arguments, the global batch, the hardware and the wall time (no tokens: hub_token
    is dropped, and the value of any ``--*token*`` flag in ``argv`` is replaced by ``<redacted>``)."""
    if not training_args.should_save:
        return
    training = {k: v for k, v in training_args.to_dict().items() if not is_token_name(k)}
    record = {
        "job": job_name,
        "argv": redacted_argv(argv) if argv is not None else None,
        **sections,
        "method": method_config.to_dict(),
        "training": training,
        "world_size": training_args.world_size,
        "global_batch_size": global_batch_size,
        "hardware": _hardware(training_args),
        "wall_time_seconds": round(seconds, 1),
    }
    with open(os.path.join(output_dir, "hf_ssl_run.json"), "w") as handle:
        json.dump(record, handle, indent=2, default=str)


def record_publication(run_dir, hub_model_id: str, license: str | None = None) -> None:
    """Add the repository ``run_dir`` was pushed to (and the licence stated for it, if any) to its run record under
    :data:`PUBLICATION`; a folder without a record is left alone."""
    path = Path(run_dir) / RUN_RECORD
    if not path.is_file():
        return
    record = json.loads(path.read_text())
    publication = {**record.get(PUBLICATION, {}), "hub_model_id": hub_model_id}
    if license:
        publication["license"] = license
    record[PUBLICATION] = publication
    path.write_text(json.dumps(record, indent=2, default=str))


def is_token_name(name: str) -> bool:
    """``hub_token``, ``token``: secrets (``tokenizer_name``, ``average_tokens_across_devices`` are not)."""
    return name == "token" or name.endswith("_token")


def redacted_argv(argv: list[str]) -> list[str]:
    """``argv`` with the values of token flags (``--hub_token X``, ``--hub_token=X``) replaced by ``<redacted>``."""
    redacted: list[str] = []
    hide_next = False
    for item in argv:
        if hide_next:
            redacted.append("<redacted>")
            hide_next = False
        elif item.startswith("--") and is_token_name(item.split("=", 1)[0][2:]):
            if "=" in item:
                redacted.append(item.split("=", 1)[0] + "=<redacted>")
            else:
                redacted.append(item)
                hide_next = True
        else:
            redacted.append(item)
    return redacted


def _hardware(training_args) -> str:
    device = training_args.device
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"
    return f"{training_args.world_size} x {name}"


def eval_result_to_dict(result: EvalResult) -> dict[str, Any]:
    return {key: value for key, value in dataclasses.asdict(result).items() if value is not None}


def eval_results_from_json(values: list[dict[str, Any]]) -> list[EvalResult]:
    """Inverse of the ``eval_results`` list in ``eval_results.json``."""
    names = {f.name for f in dataclasses.fields(EvalResult) if f.init}
    return [EvalResult(**{key: value for key, value in item.items() if key in names}) for item in values]


def recorded_normalisation(run_dir) -> tuple[list[float], list[float]] | None:
    """The image mean/std a run trained with (its record's ``views`` section), or ``None`` when the folder has no
    run record or the record no normalisation."""
    record = Path(run_dir) / RUN_RECORD
    if not record.is_file():
        return None
    views = json.loads(record.read_text()).get("views", {})
    return (views["mean"], views["std"]) if "mean" in views and "std" in views else None
