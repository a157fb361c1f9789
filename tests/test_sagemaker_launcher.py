"""sagemaker/launch_training.py against a stand-in of the SageMaker Python SDK (no AWS account here).

The stand-in is a `sagemaker` module put in sys.modules: its PyTorch estimator records the
arguments it was built with, and fit() records its own and what the staged source folder held at
upload time. What this cannot show: that AWS accepts the job, the container's installs, torchrun
inside it. docs/sagemaker.md says so.
"""

import importlib.machinery
import importlib.util
import json
import sys
import types
from pathlib import Path

import pytest

from diffusion_utilities import ContextUnet
from diffusion_utilities.cli import build_parser as train_parser

ROOT = Path(__file__).resolve().parents[1]


def _load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "sagemaker" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


launcher = _load("launch_training")
entry = _load("train_entry")
ROLE = "arn:aws:iam::123456789012:role/course"
CKPT = "s3://course-bucket/diffusion/run1"


class StandIn:
    """What the launcher did with the SDK: the estimators' arguments and the fit() calls."""

    def __init__(self, role_error=False):
        self.estimators, self.fits = [], []
        record = self

        class PyTorch:
            def __init__(self, **kwargs):
                record.estimators.append(kwargs)
                self.kwargs = kwargs

            def fit(self, inputs=None, wait=True, logs="All", job_name=None, experiment_config=None):
                src = Path(self.kwargs["source_dir"])
                record.fits.append({"inputs": inputs, "wait": wait,
                                    "files": sorted(str(p.relative_to(src)) for p in src.rglob("*") if p.is_file()),
                                    "requirements": (src / "requirements.txt").read_text().split()})
                self.latest_training_job = types.SimpleNamespace(name="diffusion-sprites-2026-12-02-00-00-00-000")

        def get_execution_role():
            if role_error:
                raise ValueError("The current AWS identity is not a role")
            return "arn:aws:iam::123456789012:role/notebook"

        self.sagemaker = types.ModuleType("sagemaker")
        self.sagemaker.__spec__ = importlib.machinery.ModuleSpec("sagemaker", None, origin="/stand-in/sagemaker/__init__.py")
        self.sagemaker.get_execution_role = get_execution_role
        self.pytorch = types.ModuleType("sagemaker.pytorch")
        self.pytorch.PyTorch = PyTorch
        self.sagemaker.pytorch = self.pytorch
        self.image_checks = []
        self.sagemaker.image_uris = types.SimpleNamespace(retrieve=self.retrieve)
        self.sagemaker.fw_utils = types.SimpleNamespace(validate_torch_distributed_distribution=self.torch_distributed)

    # sagemaker 2.257.7's rules for the PyTorch training images (image_uri_config/pytorch.json, fw_utils.py), cut
    # down to the versions these tests use: "2.8" is an alias of 2.8.0 for the images, not for torch_distributed
    IMAGES = {"2.8.0": "py312", "2.8": "py312", "2.7.1": "py312", "2.5.1": "py311"}
    TORCH_DISTRIBUTED = ("2.5.1", "2.7.1", "2.8.0")

    def retrieve(self, framework, region, version=None, py_version=None, instance_type=None, image_scope=None, **_):
        self.image_checks.append((framework, version, py_version, instance_type, image_scope))
        if version not in self.IMAGES:
            raise ValueError(f"Unsupported {framework} version: {version}. You may need to upgrade your SDK version "
                             f"(pip install -U sagemaker) for newer {framework} versions. Supported {framework} "
                             f"version(s): {', '.join(self.IMAGES)}.")
        if py_version != self.IMAGES[version]:
            raise ValueError(f"Unsupported Python version: {py_version}. You may need to upgrade your SDK version "
                             f"(pip install -U sagemaker) for newer Python versions. Supported Python version(s): "
                             f"{self.IMAGES[version]}.")
        return f"763104351884.dkr.ecr.{region}.amazonaws.com/pytorch-training:{version}"

    def torch_distributed(self, instance_type, distribution, framework_version, py_version, image_uri, entry_point):
        if framework_version not in self.TORCH_DISTRIBUTED:
            raise ValueError(f"Provided framework_version {framework_version} is not supported by torch_distributed "
                             f"for instance {instance_type}.\nPlease specify one of the supported framework "
                             f"versions:{list(self.TORCH_DISTRIBUTED)} \n")


@pytest.fixture
def sdk(monkeypatch):
    stand_in = StandIn()
    monkeypatch.setitem(sys.modules, "sagemaker", stand_in.sagemaker)
    monkeypatch.setitem(sys.modules, "sagemaker.pytorch", stand_in.pytorch)
    return stand_in


def _run(capsys, *argv):
    code = launcher.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_on_demand_job_on_one_gpu(sdk, capsys):
    code, out, err = _run(capsys, "--role", ROLE, "--", "--epochs", "3")
    assert code == 0, err
    (kwargs,) = sdk.estimators
    assert kwargs["entry_point"] == "train_entry.py"
    assert (kwargs["instance_type"], kwargs["instance_count"], kwargs["role"]) == ("ml.g5.2xlarge", 1, ROLE)
    assert (kwargs["framework_version"], kwargs["py_version"]) == ("2.8.0", "py312")
    assert kwargs["distribution"] == {"torch_distributed": {"enabled": True}}  # torchrun, one process per GPU
    assert kwargs["checkpoint_local_path"] == "/opt/ml/checkpoints"
    assert kwargs["max_run"] == 7200
    for spot_only in ("use_spot_instances", "max_wait", "checkpoint_s3_uri"):
        assert spot_only not in kwargs
    (fit,) = sdk.fits
    assert fit["inputs"] is None and fit["wait"] is False  # no --data: procedural sprites
    assert "diffusion-sprites-2026-12-02-00-00-00-000" in out


def test_spot_job_keeps_its_checkpoints_in_s3(sdk, capsys):
    code, _, err = _run(capsys, "--role", ROLE, "--spot", "--checkpoint-s3-uri", CKPT, "--max-run", "3600",
                        "--data", "s3://course-bucket/sprites/", "--wait")
    assert code == 0, err
    (kwargs,) = sdk.estimators
    assert kwargs["use_spot_instances"] is True
    assert (kwargs["max_run"], kwargs["max_wait"]) == (3600, 7200)  # max_wait defaults to twice max_run
    assert (kwargs["checkpoint_s3_uri"], kwargs["checkpoint_local_path"]) == (CKPT, "/opt/ml/checkpoints")
    assert sdk.fits[0]["inputs"] == {"training": "s3://course-bucket/sprites/"}
    assert sdk.fits[0]["wait"] is True
    _run(capsys, "--role", ROLE, "--spot", "--checkpoint-s3-uri", CKPT, "--max-run", "3600", "--max-wait", "3600")
    assert sdk.estimators[1]["max_wait"] == 3600


def test_two_four_gpu_instances_run_torch_distributed(sdk, capsys):
    code, _, err = _run(capsys, "--role", ROLE, "--instance-type", "ml.g5.12xlarge", "--instance-count", "2",
                        "--", "--batch-size", "256")
    assert code == 0, err
    (kwargs,) = sdk.estimators
    assert (kwargs["instance_type"], kwargs["instance_count"]) == ("ml.g5.12xlarge", 2)
    assert kwargs["distribution"] == {"torch_distributed": {"enabled": True}}


def test_a_cpu_instance_runs_one_plain_process(sdk, capsys):
    assert _run(capsys, "--role", ROLE, "--instance-type", "ml.m5.xlarge")[0] == 0
    assert "distribution" not in sdk.estimators[0]  # the SDK allows torch_distributed on GPU and Trainium only


def test_hyperparameters_pass_through_to_train(sdk, capsys):
    code, _, err = _run(capsys, "--role", ROLE, "--", "--epochs", "3", "--batch-size", "200", "--precision", "bf16",
                        "--augment", "--lr=2e-3", "--snapshot-epochs", "1,2")
    assert code == 0, err
    hps = sdk.estimators[0]["hyperparameters"]
    assert hps == {"epochs": "3", "batch-size": "200", "precision": "bf16", "augment": True, "lr": "2e-3",
                   "snapshot-epochs": "1,2"}
    # the SDK JSON-encodes each value and the container hands the decoded object over as SM_HPS
    in_the_container = json.loads(json.dumps({k: json.loads(json.dumps(v)) for k, v in hps.items()}))
    argv = entry.train_argv(in_the_container)
    assert argv == ["train", "--epochs", "3", "--batch-size", "200", "--precision", "bf16", "--augment",
                    "--lr", "2e-3", "--snapshot-epochs", "1,2"]
    a = train_parser().parse_args([*argv, "--out", "/opt/ml/checkpoints"])
    assert (a.epochs, a.batch_size, a.precision, a.augment, a.lr, a.snapshot_epochs) == (3, 200, "bf16", True, 2e-3, (1, 2))


def test_false_and_missing_flags_are_left_out():
    assert entry.train_argv({"augment": False, "epochs": 2, "lr": None}) == ["train", "--epochs", "2"]


def test_the_job_uploads_the_package_not_the_repository(sdk, capsys):
    assert _run(capsys, "--role", ROLE)[0] == 0
    (fit,) = sdk.fits
    assert {"train_entry.py", "requirements.txt", "diffusion_utilities/__init__.py", "diffusion_utilities/cli.py"} <= set(fit["files"])
    assert not [f for f in fit["files"] if f.split("/")[0] in ("notebooks", "weights", "runs", "tests")]
    assert not [f for f in fit["files"] if "__pycache__" in f]
    names = {r.split(">")[0].split("=")[0].split("<")[0] for r in fit["requirements"]}
    assert "numpy" in names and "safetensors" in names
    assert not names & {"torch", "torchvision", "jupyterlab", "ipykernel", "ipywidgets"}  # the image's CUDA torch stays


def test_without_role_the_notebook_role_is_used(sdk, capsys):
    assert _run(capsys)[0] == 0
    assert sdk.estimators[0]["role"] == "arn:aws:iam::123456789012:role/notebook"


def test_without_role_outside_a_notebook_one_line(monkeypatch, capsys):
    stand_in = StandIn(role_error=True)
    monkeypatch.setitem(sys.modules, "sagemaker", stand_in.sagemaker)
    monkeypatch.setitem(sys.modules, "sagemaker.pytorch", stand_in.pytorch)
    code, _, err = _run(capsys)
    assert code == 2 and err.count("\n") == 1 and "--role arn:aws:iam::" in err
    assert stand_in.estimators == []


def test_dry_run_needs_no_sdk(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "sagemaker", None)  # importing it would fail
    code, out, err = _run(capsys, "--dry-run", "--spot", "--checkpoint-s3-uri", CKPT, "--", "--epochs", "2")
    assert code == 0, err
    shown = json.loads(out)
    assert shown["estimator"]["use_spot_instances"] is True and shown["estimator"]["max_wait"] == 14400
    assert shown["estimator"]["hyperparameters"] == {"epochs": "2"}
    assert shown["fit"] == {"inputs": None, "wait": False}


def test_missing_sdk_is_one_line(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "sagemaker", None)
    code, _, err = _run(capsys, "--role", ROLE)
    assert code == 2 and err.count("\n") == 1
    assert "not installed; pip install 'sagemaker>=2.257,<3'" in err


def test_sdk_v3_without_the_estimator_is_one_line(monkeypatch, capsys):
    v3 = types.ModuleType("sagemaker")
    v3.__spec__ = importlib.machinery.ModuleSpec("sagemaker", None, origin="/site-packages/sagemaker/__init__.py")
    monkeypatch.setitem(sys.modules, "sagemaker", v3)
    monkeypatch.setitem(sys.modules, "sagemaker.pytorch", None)
    code, _, err = _run(capsys, "--role", ROLE)
    assert code == 2 and err.count("\n") == 1 and "v3" in err and "<3" in err


@pytest.mark.parametrize("argv, says", [
    (["--spot", "--checkpoint-s3-uri", CKPT, "--max-run", "7200", "--max-wait", "3600"], "shorter than --max-run"),
    (["--spot"], "--spot needs --checkpoint-s3-uri"),
    (["--max-wait", "9000"], "spot jobs only"),
    (["--instance-count", "0"], "at least 1"),
    (["--instance-type", "g5.2xlarge"], "not a SageMaker instance type"),
    (["--instance-type", "ml.trn1.2xlarge"], "Neuron"),
    (["--instance-type", "ml.m5.xlarge", "--instance-count", "2"], "needs GPU instances"),
    (["--checkpoint-s3-uri", "course-bucket/run1"], "not an S3 URI"),
    (["--max-run", "0"], "at least 1 second"),
    (["--instance-type", "ml.g5.48xlarge", "--", "--batch-size", "100"], "does not split over the 8 GPUs"),
    (["--", "--epocs", "3"], "unrecognized arguments: --epocs"),  # train's own parser, before any upload
    (["--", "--batch-size", "many"], "--batch-size"),
    (["--", "--out", "/tmp/x"], "set by the job"),
    (["--", "--resume"], "resumes by itself"),
    (["--", "32"], "is not a train option"),
    (["--no-such-option"], "unrecognized arguments"),
    # train's own config checks (issue 33): each of these passed and failed in the job
    (["--", "--lr", "5"], "lr must be"),
    (["--", "--prediction", "eps", "--zero-terminal-snr"], "needs v-prediction"),
    (["--", "--precision", "fp64"], "precision must be"),
    (["--", "--objective", "flow", "--timesteps", "50"], "--timesteps"),
    (["--", "--n-feat", "12"], "n_feat must be a multiple of 8"),
    (["--", "--context-dropout", "1"], "context_dropout"),
    (["--", "--init-from", "no/such/weights.safetensors"], "not a file on this machine"),
    (["--", "--teacher", "weights/sprites_v.safetensors", "--distill-steps", "4"], "ships --init-from weights only"),
    (["--instance-type", "ml.m5.xlarge", "--", "--cuda-graph"], "--cuda-graph"),
    # issue 33's re-walk: each passed --dry-run and would fail in the job (train's device checks) or at CreateTrainingJob
    (["--", "--device", "mps"], "takes auto, cpu, cuda or cuda:N"),
    (["--", "--device", "foo"], "takes auto, cpu, cuda or cuda:N"),
    (["--", "--device", "cuda:5"], "has 1 GPU"),
    (["--instance-type", "ml.g5.12xlarge", "--", "--device", "cuda:0"], "each of the 4 processes its own GPU"),
    (["--", "--teacher-substeps", "3"], "cannot ship"),
    (["--", "--distill-inputs", "student"], "cannot ship"),
    (["--", "--distill-steps", "4"], "cannot ship"),
    (["--max-run", "999999999"], "28 days"),
    (["--spot", "--checkpoint-s3-uri", "s3://course-bucket/c", "--max-run", "2500000"], "28 days"),
    (["--job-name-prefix", "my_job!"], "letters, digits and hyphens"),
    (["--job-name-prefix=-x"], "letters, digits and hyphens"),
    (["--role", ""], "is not an IAM role"),
    (["--data", "s3://course-bucket/sprites/", "--", "--n-sprites", "100"], "drop -- --n-sprites"),
    (["--instance-type", "ml.g5.12xlarge", "--", "--cuda-graph"], "--cuda-graph"),
    # the SDK's image and torch_distributed checks, offline (here its stand-in's)
    (["--framework-version", "2.8"], "torch_distributed"),
    (["--py-version", "py311"], "Unsupported Python version: py311"),
    (["--instance-type", "ml.m5.xlarge", "--framework-version", "2.9.0"], "Unsupported pytorch version: 2.9.0"),
    (["--framework-version", "2.2.0"], "torch ≥ 2.6"),  # older than the course's floor, whatever the SDK has
    (["--framework-version", "latest"], "torch ≥ 2.6"),
])
def test_bad_input_is_one_line_and_submits_nothing(sdk, capsys, argv, says):
    code, out, err = _run(capsys, "--role", ROLE, *argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and says in err, err
    assert sdk.estimators == [] and sdk.fits == []


@pytest.mark.parametrize("argv", [["--framework-version", "2.8"], ["--py-version", "py311"],
                                  ["--", "--lr", "5"], ["--", "--init-from", "no/such/weights.safetensors"]])
def test_the_dry_run_refuses_what_the_job_would_refuse(sdk, capsys, argv):
    code, out, err = _run(capsys, "--dry-run", *argv)
    assert code == 2 and out == "" and err.count("\n") == 1, err


def test_the_image_is_checked_for_the_instance_and_versions_asked_for(sdk, capsys):
    assert _run(capsys, "--dry-run", "--instance-type", "ml.m5.xlarge", "--framework-version", "2.7.1")[0] == 0
    (check,) = sdk.image_checks
    assert check == ("pytorch", "2.7.1", "py312", "ml.m5.xlarge", "training")


def test_a_local_init_from_travels_with_the_job(sdk, capsys, tmp_path):
    import torch

    from diffusion_utilities import ContextUnet, save_model

    weights = tmp_path / "start.safetensors"
    save_model(ContextUnet(3, 16, 5, 16).eval(), weights, {"diffusion": {}})
    code, _, err = _run(capsys, "--role", ROLE, "--", "--n-feat", "16", "--init=" + str(weights))  # an abbreviation too
    assert code == 0, err
    assert sdk.estimators[0]["hyperparameters"] == {"n-feat": "16", "init-from": "init/start.safetensors"}
    assert {"init/start.safetensors", "init/start.json"} <= set(sdk.fits[0]["files"])
    # in the job, train_entry reads it from beside itself, where the source folder was unpacked
    argv = entry.job_argv({"SM_HPS": json.dumps({"init-from": "init/start.safetensors"})})
    assert argv == ["train", "--init-from", str(ROOT / "sagemaker" / "init" / "start.safetensors")]
    code, _, err = _run(capsys, "--role", ROLE, "--", "--init-from", str(weights))  # n_feat 64: the run's default
    assert code == 2 and "--n-feat 16" in err and err.count("\n") == 1, err
    assert len(sdk.estimators) == 1


@pytest.mark.parametrize("hps, says", [("{bad", "SM_HPS is not valid JSON"), ("[1, 2]", "not a JSON object"),
                                      ('{"epochs": null}', "SM_HPS gives epochs no value")])
def test_malformed_sm_hps_is_one_line(capsys, hps, says):
    assert entry.run({"SM_HPS": hps}) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err and "Traceback" not in err, err


def test_the_docs_dry_run_example_is_accepted_as_written(monkeypatch, capsys):
    import re
    import shlex

    monkeypatch.setitem(sys.modules, "sagemaker", None)
    text = (ROOT / "docs" / "sagemaker.md").read_text()
    commands = re.findall(r"^python sagemaker/launch_training\.py (.*?)(?:\s+#.*)?$", text, re.M)
    assert any("--dry-run" in c for c in commands)
    for command in commands:
        code, _, err = _run(capsys, "--dry-run", *shlex.split(command))
        assert code == 0, (command, err)


def _real_sdk():
    try:
        spec = importlib.util.find_spec("sagemaker.image_uris")
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        pytest.skip("the SageMaker Python SDK (the optional extra '.[sagemaker]') is not installed")


@pytest.mark.parametrize("argv, says", [
    (["--framework-version", "2.8"], "torch_distributed"),
    (["--py-version", "py311"], "py311"),
    (["--instance-type", "ml.m5.xlarge", "--framework-version", "9.9.0"], "9.9.0"),
])
def test_versions_are_checked_by_the_real_sdk(capsys, argv, says):
    _real_sdk()
    code, out, err = _run(capsys, "--dry-run", *argv)
    assert code == 2 and out == "" and err.count("\n") == 1 and says in err, err
    code, out, err = _run(capsys, "--dry-run")
    assert code == 0 and json.loads(out)["estimator"]["framework_version"] == "2.8.0", err


@pytest.mark.parametrize("make, says", [
    (lambda p: _save_start(p, ContextUnet(1, 16, 5, 16), {}), "1-channel"),
    (lambda p: _save_start(p, ContextUnet(3, 16, 5, 16), {"images_seen_total": "lots"}), "images_seen_total"),
    (lambda p: _save_start(p, ContextUnet(3, 16, 5, 20), {}), "20×20"),
])
def test_the_launcher_checks_init_from_weights_as_train_does(sdk, capsys, tmp_path, make, says):
    # issue 33: the launcher's own check missed what train refuses in the job (after the upload)
    weights = tmp_path / "start.safetensors"
    make(weights)
    code, out, err = _run(capsys, "--role", ROLE, "--", "--n-feat", "16", "--init-from", str(weights))
    assert code == 2 and err.count("\n") == 1 and says in err, err
    assert sdk.estimators == [] and sdk.fits == []


def _save_start(path, net, card):
    from diffusion_utilities import save_model

    save_model(net.eval(), path, {"diffusion": {}, **card})


def test_no_aws_credentials_is_one_line_before_anything_is_uploaded(sdk, capsys, monkeypatch):
    # the real SDK, offline without credentials: a NoCredentialsError traceback from inside fit(), after a
    # usage-telemetry request's own traceback
    no_credentials = types.SimpleNamespace(boto_session=types.SimpleNamespace(get_credentials=lambda: None))
    monkeypatch.setattr(sdk.pytorch.PyTorch, "sagemaker_session", no_credentials, raising=False)
    code, out, err = _run(capsys, "--role", ROLE)
    assert code == 2 and out == "" and err.count("\n") == 1 and "no AWS credentials" in err, err
    assert sdk.fits == []


def test_the_real_sdk_without_credentials_is_one_line(capsys, monkeypatch, tmp_path):
    _real_sdk()
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance role to find either
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    code, out, err = _run(capsys, "--role", ROLE)
    assert code == 2 and err.count("\n") == 1 and "no AWS credentials" in err and "Traceback" not in err, err
