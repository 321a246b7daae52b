"""The tracking store: version and git tags, experiments created by runs starting together."""

from __future__ import annotations

import json
import subprocess
import threading

from mlflow.tracking import MlflowClient

from gdlseg.tracking import experiment_id, software_tags

from .stores import sqlite


def test_the_git_commit_tag_names_the_bundles_checkout_and_is_absent_outside_one(tmp_path):
    bundle = tmp_path / "checkout" / "bundles" / "demo"
    (bundle / "configs").mkdir(parents=True)
    (bundle / "configs" / "metadata.json").write_text(json.dumps({"version": "1.2.3"}))
    git = ["git", "-C", str(tmp_path / "checkout"), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "bundle"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    tags = software_tags(bundle)
    assert tags["git.commit"] == head and tags["bundle.version"] == "1.2.3"
    outside = tmp_path / "copy"
    outside.mkdir()
    assert "git.commit" not in software_tags(outside)


def test_trackers_starting_together_share_one_experiment(tmp_path):
    """Two trainings that start at once both create the experiment: neither may fail for it."""
    uri = sqlite(tmp_path)
    MlflowClient(uri).search_experiments()  # create the schema once, as a first run would
    found, errors = [], []

    def start() -> None:
        try:
            found.append(experiment_id(MlflowClient(uri), "together", uri))
        except Exception as error:
            errors.append(error)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(set(found)) == 1
