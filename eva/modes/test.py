"""mode=test checkpoint=PATH: evaluate a checkpoint eva wrote on the test split, with reports.

The architecture comes from the composed config and must match the one the checkpoint was
trained with: a mismatch stops in one line that names the overrides to add. The same
dataset subset and seed give the same test split, hence the accuracy the training run
reported for that epoch.
"""

import logging
import pickle
import time
import zipfile
from pathlib import Path

from omegaconf import OmegaConf

from eva.config.validate import validate
from eva.engine.checkpoint import load_checkpoint
from eva.engine.loop import evaluate
from eva.errors import EvaError
from eva.files import write_json
from eva.modes import runtime
from eva.tracking import Launch
from eva.tracking.params import override_value

log = logging.getLogger(__name__)

# Model keys that do not change the weights' shapes: a checkpoint fits whatever they say.
SHAPELESS_MODEL_KEYS = ("dropout", "gradcam_layer")
# Dataset keys that choose the test split: compared to say whether accuracies are comparable.
SPLIT_KEYS = ("name", "test_subset")


def checkpoint_path(cfg, launch_dir: Path) -> Path:
    if not cfg.checkpoint:
        raise EvaError("mode=test needs checkpoint=PATH (a checkpoints/best.pt eva wrote)")
    path = Path(cfg.checkpoint).expanduser()
    path = path if path.is_absolute() else launch_dir / path
    if not path.is_file():
        raise EvaError(f"checkpoint={cfg.checkpoint}: no such file ({path})")
    return path


def read_checkpoint(path: Path, shown: str) -> dict:
    """The checkpoint's contents, loaded safely (tensors and plain containers only)."""
    try:
        state = load_checkpoint(path)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        first = first.split(". ")[0]  # torch's weights_only advice runs on for lines
        raise EvaError(f"checkpoint={shown}: not a checkpoint eva can read ({first})") from None
    if not isinstance(state, dict) or "model" not in state or "model_name" not in state:
        raise EvaError(f"checkpoint={shown}: not an eva checkpoint (no model weights or name)")
    return state


def check_fits(cfg, state: dict, shown: str) -> None:
    """The config must build the architecture the checkpoint holds, on the same dataset."""
    trained = state.get("config") or {}
    if state["model_name"] != cfg.model.name:
        raise EvaError(
            f"checkpoint={shown}: holds a {state['model_name']} model, the config builds "
            f"{cfg.model.name}: add model={state['model_name']}"
        )
    ours = OmegaConf.to_container(cfg.model, resolve=True, enum_to_str=True)
    theirs = trained.get("model", {})
    differ = {k: v for k, v in theirs.items() if k not in SHAPELESS_MODEL_KEYS and ours.get(k) != v}
    if differ:
        add = " ".join(f"model.{k}={override_value(v).replace(' ', '')}" for k, v in differ.items())
        raise EvaError(f"checkpoint={shown}: was trained with other model settings: add {add}")
    dataset = trained.get("dataset", {}).get("name")
    if dataset and dataset != cfg.dataset.name:
        raise EvaError(
            f"checkpoint={shown}: was trained on {dataset}, the config says "
            f"dataset={cfg.dataset.name}: add dataset={dataset}"
        )


def same_split(cfg, state: dict) -> bool:
    """Whether this run's test split is the one the checkpoint's accuracy was measured on.

    The whole test split (test_subset null) is the same whatever the seed; a subset is
    drawn from the seed, so then the seeds must match too.
    """
    trained = state.get("config") or {}
    dataset = trained.get("dataset", {})
    if any(dataset.get(k) != cfg.dataset.get(k) for k in SPLIT_KEYS):
        return False
    return cfg.dataset.test_subset is None or trained.get("seed") == cfg.seed


def evaluate_checkpoint(cfg, output_dir, launch: Launch | None = None) -> dict:
    """Evaluate cfg.checkpoint; write results.json (test_acc, test_loss) and the reports."""
    launch = launch or Launch()
    validate(cfg, launch.overrides)
    path = checkpoint_path(cfg, launch.launch_dir)  # a bad checkpoint fails before any work
    state = read_checkpoint(path, cfg.checkpoint)
    check_fits(cfg, state, cfg.checkpoint)
    rt = runtime.start(cfg, output_dir, launch)
    runtime.build(rt)
    try:
        rt.model.load_state_dict(state["model"])
    except RuntimeError as e:  # shapes that the config check could not see
        first = str(e).strip().splitlines()[0]
        raise EvaError(f"checkpoint={cfg.checkpoint}: does not fit the model ({first})") from None

    recorded = (state.get("metrics") or {}).get("test_acc")
    rt.extra_params["derived.checkpoint"] = str(path.absolute())
    runtime.start_run(rt, run_name=f"test: {cfg.name}")
    tracker = rt.tracker
    with tracker.recording():
        source = state.get("mlflow_run_id")
        tracker.set_tags({"checkpoint": str(path.absolute()), "source_run_id": source or ""})
        # One pass over the test split: the reports reuse its predictions.
        evaluation = evaluate(
            rt.model, rt.data.test, rt.device, keep_predictions=cfg.report.enabled
        )
        test_loss, test_acc = evaluation.loss, evaluation.acc
        results = {
            "mode": "test",
            "test_acc": test_acc,
            "test_loss": test_loss,
            "checkpoint": str(path.absolute()),
            "checkpoint_epoch": state.get("epoch"),
            "checkpoint_test_acc": recorded,  # what training measured for these weights
            "same_split": same_split(cfg, state),
            "source_run_id": source,
            "model": cfg.model.name,
            "dataset": cfg.dataset.name,
            "sizes": rt.data.sizes,
            "device": str(rt.device),
            "mlflow_run_id": tracker.run_id,
            "objective": test_acc,
        }
        metrics = {"test_acc": test_acc, "test_loss": test_loss}
        if cfg.report.enabled:
            from eva.report import make_reports

            reports = make_reports(
                cfg, rt.model, rt.data, rt.device, rt.output_dir, predictions=evaluation
            )
            results["per_class"] = reports.per_class
            results["reports"] = reports.summary()
            metrics.update(reports.metrics)
        results["seconds"] = time.perf_counter() - rt.started
        write_json(results, rt.output_dir / "results.json")
        tracker.log_metrics(metrics, step=0, phase="final")
        tracker.log_files(runtime.run_files(rt.output_dir))

    if recorded is None:
        note = ""
    elif results["same_split"]:
        note = f"; training measured {recorded:.4f} on this split at epoch {state.get('epoch')}"
    else:
        note = f"; training measured {recorded:.4f} on another split (seed or test_subset differ)"
    log.info("test_acc %.4f, test_loss %.4f%s", test_acc, test_loss, note)
    return results
