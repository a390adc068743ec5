"""A run's logged model in MLflow's model registry, and the alias `champion` on the best.

tracking.register=NAME: a run that logs its MLflow model adds it as a new version of the
registered model NAME (made on first use), tagged with what the run was selected on: the
objective's name (best_val_acc with a validation split, else best_test_acc), its value,
the direction (maximize), the run id and, for a sweep's trial, the study. The alias
`champion` goes to the new version when NAME has no champion yet, or when the new version
scores higher than the champion on the same objective; otherwise it stays where it is (a
champion set by hand, or one measured on another objective, is never moved). Two
registrations at the same moment settle on the better of them (settle()).

    mlflow.pytorch.load_model("models:/NAME@champion")

These calls run where the tracker's MLflow calls run (eva's writer process), with its
MlflowClient; the caller logs the answer (Registration.line()) in the run's own log.
"""

import json
from dataclasses import dataclass

CHAMPION = "champion"
DIRECTION = "maximize"  # eva's objectives are accuracies


@dataclass
class Registration:
    """What register() did: the new version, and which version is champion now."""

    name: str
    version: int
    objective: str
    value: float
    champion: int | None  # the version holding the alias afterwards
    before: int | None  # the version that held it before (None: none did)

    @property
    def crowned(self) -> bool:
        return self.champion == self.version

    def line(self) -> str:
        """One line for the run's log."""
        where = f"registered model {self.name} version {self.version}"
        scored = f"{self.objective} {self.value:.4f}"
        if not self.crowned:
            return f"{where} ({scored}): champion stays version {self.champion}"
        if self.before is None:
            return f"{where} ({scored}) is the first champion"
        return f"{where} ({scored}) is the new champion (was version {self.before})"


def register(
    client,
    name: str,
    model_uri: str,
    run_id: str,
    objective: str,
    value: float,
    study: str | None = None,
) -> Registration:
    """Add the logged model at model_uri (models:/m-...) as a new version of registered
    model `name`, tagged with the objective, and move `champion` to it if it is better."""
    ensure_registered(client, name)
    model_id = logged_model_id(model_uri)
    tags = {
        "objective": objective,
        "objective_value": repr(float(value)),
        "direction": DIRECTION,
        "run_id": run_id,
    }
    if study:
        tags["study"] = study
    # The logged model's own folder, not its models:/ URI: MLflow's store would look that
    # URI up in the process-wide tracking store, not in this client's.
    logged = client.get_logged_model(model_id) if model_id else None
    source = logged.artifact_location if logged else model_uri
    made = client.create_model_version(
        name, source=source, run_id=run_id, tags=tags, model_id=model_id
    )
    version = int(made.version)
    if logged is not None:
        link_logged_model(client, logged, name, version)
    before = champion_of(client, name)
    if before is None:
        client.set_registered_model_alias(name, CHAMPION, str(version))
    champion = settle(client, name, version)  # this version is one of settle's candidates
    return Registration(name, version, objective, float(value), champion, before)


def settle(client, name: str, version: int) -> int | None:
    """The champion once registrations made at the same time have all set the alias.

    The registry has no compare-and-set: two versions registered at once can each beat the
    champion they read, and the worse one may set the alias last. So each registration
    looks again after setting it: the champion now against every version numbered from its
    own up (the ones registered meanwhile), and the best of those holds the alias. Versions
    older than its own are left out, so a champion chosen by hand is still only moved by a
    newer, better version. What is left of the race is one read and one write apart."""
    now = champion_of(client, name)
    if now is None:
        return None
    best, best_tags = now, client.get_model_version(name, str(now)).tags
    for other in client.search_model_versions(f"name='{name}'"):
        if int(other.version) >= version and beats(best_tags, other.tags):
            best, best_tags = int(other.version), other.tags
    if best != now:
        client.set_registered_model_alias(name, CHAMPION, str(best))
    return best


def ensure_registered(client, name: str) -> None:
    """The registered model `name`, made if missing (by whichever of two runs comes first)."""
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name)
    except MlflowException as e:
        if e.error_code != "RESOURCE_ALREADY_EXISTS":
            raise


def logged_model_id(model_uri: str) -> str | None:
    """m-... of models:/m-... (what Tracker.log_model returns); None for another URI."""
    prefix = "models:/"
    rest = model_uri[len(prefix) :] if model_uri.startswith(prefix) else ""
    return rest if rest and "/" not in rest and "@" not in rest else None


def link_logged_model(client, logged, name: str, version: int) -> None:
    """List the version on the logged model, as mlflow.register_model does: the logged
    model's page in the UI links to it."""
    from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

    known = logged.tags.get(MLFLOW_MODEL_VERSIONS)
    versions = json.loads(known) if known else []
    versions.append({"name": name, "version": str(version)})
    client.set_logged_model_tags(logged.model_id, {MLFLOW_MODEL_VERSIONS: json.dumps(versions)})


def champion_of(client, name: str) -> int | None:
    """The version the alias champion points at, or None."""
    version = client.get_registered_model(name).aliases.get(CHAMPION)
    return int(version) if version is not None else None


def beats(champion_tags: dict, new_tags: dict) -> bool:
    """Does a version tagged new_tags score better than the champion? Only on the same
    objective, with the champion's value readable; a tie keeps the champion."""
    if new_tags.get("objective") is None or champion_tags.get("objective") != new_tags["objective"]:
        return False
    directions = {tags.get("direction", DIRECTION) for tags in (champion_tags, new_tags)}
    if directions != {DIRECTION}:
        return False
    try:
        current = float(champion_tags["objective_value"])
        new = float(new_tags["objective_value"])
    except (KeyError, ValueError):
        return False
    return new > current
