"""Submit a SageMaker training job that runs ``python -m diffusion_utilities train`` on GPU instances.

    pip install -e ".[sagemaker]"          # the SageMaker Python SDK v2 (not needed by the lessons)
    python sagemaker/launch_training.py --role ROLE_ARN -- --epochs 32
    python sagemaker/launch_training.py --role ROLE_ARN --instance-type ml.g5.12xlarge --spot \\
        --checkpoint-s3-uri s3://my-bucket/diffusion/run1 --data s3://my-bucket/sprites/ -- --epochs 32 --batch-size 256
    python sagemaker/launch_training.py --dry-run ...   # the estimator's arguments as JSON, without the SDK

Everything after ``--`` is passed to ``train`` as hyperparameters. It is checked here first by train's
own parser and train's own checks of the values (``cli.train_configs``), so a typo costs a second, not a
container start you pay for. A local ``--init-from`` file is checked as train checks it and uploaded
with the job (``init/NAME``, which train_entry.py reads from beside itself). The PyTorch image
(``--framework-version``, ``--py-version``) is checked offline with the SDK's own ``image_uris.retrieve``
and torch_distributed check where the SDK is installed.

The job runs sagemaker/train_entry.py in SageMaker's PyTorch container. On GPU instances the
estimator gets ``distribution={"torch_distributed": {"enabled": True}}``: SageMaker then starts
the entry point under torchrun itself, one process per GPU on every instance ("torch_distributed –
This option runs torchrun", https://docs.aws.amazon.com/sagemaker/latest/dg/data-parallel-framework-estimator.html).
The SDK accepts it on GPU (ml.g*, ml.p*) and Trainium instances only (sagemaker 2.257.7,
fw_utils.validate_torch_distributed_distribution). On a one-GPU instance torchrun starts one
process, which trains as a plain one does.

Estimator arguments (sagemaker.pytorch.PyTorch and its base EstimatorBase,
https://sagemaker.readthedocs.io/en/stable/frameworks/pytorch/sagemaker.pytorch.html):
use_spot_instances, max_wait ("Timeout in seconds waiting for spot training job"), max_run,
checkpoint_s3_uri and checkpoint_local_path ("SageMaker will persist all files under this path to
checkpoint_s3_uri continually during training. On job startup the reverse happens"). See also
https://docs.aws.amazon.com/sagemaker/latest/dg/model-managed-spot-training.html.

Bad input exits with code 2 and one line, before anything is uploaded or started.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import torch

from diffusion_utilities.cli import _Parser, check_sprite_source, train_configs
from diffusion_utilities.cli import build_parser as train_parser
from diffusion_utilities.distributed import SAGEMAKER_CHECKPOINTS
from diffusion_utilities.errors import BadInput
from diffusion_utilities.model import ContextUnet, ModelConfig
from diffusion_utilities.sprites import SIZE
from diffusion_utilities.training import load_start
from diffusion_utilities.weights import card_path, load_model

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
ENTRY = "train_entry.py"
# The newest PyTorch training image and its Python in sagemaker 2.257.7 (image_uri_config/pytorch.json),
# which also lists 2.8.0 among the versions torch_distributed supports on GPUs; the course needs torch ≥ 2.6.
FRAMEWORK_VERSION, PY_VERSION = "2.8.0", "py312"
# one process per GPU, started by SageMaker's torchrun (see above)
DISTRIBUTION = {"torch_distributed": {"enabled": True}}
INIT = "init"  # the staged folder that --init-from weights travel in, beside train_entry.py
# the region the image check looks in (an image may be missing from a region): the one the environment names,
# as the SDK's session would read it, else us-east-1, where every PyTorch training image is
REGION = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
# train options the container decides: where the data, checkpoints and model are, and resuming
SET_BY_THE_JOB = {
    "out": "the job writes checkpoints to its checkpoint folder and the model to SM_MODEL_DIR; drop --out",
    "data": "give the S3 data as the launcher's --data s3://..., before the --",
    "resume": "a job resumes by itself when its checkpoint folder holds a run; drop --resume",
    "overwrite": "a job resumes by itself when its checkpoint folder holds a run; for a new run use a new --checkpoint-s3-uri",
}
# GPUs per instance of the multi-GPU types, to check that --batch-size splits over the processes
# (one per GPU). Other types count as one GPU: right for ml.g5.2xlarge and the like; for a multi-GPU
# type missing here, train itself refuses a batch that does not split, when the job starts.
GPUS = {"ml.g5.12xlarge": 4, "ml.g5.24xlarge": 4, "ml.g5.48xlarge": 8, "ml.g6.12xlarge": 4, "ml.g6.24xlarge": 4,
        "ml.g6.48xlarge": 8, "ml.p3.8xlarge": 4, "ml.p3.16xlarge": 8, "ml.p4d.24xlarge": 8, "ml.p5.48xlarge": 8}
# requirements.txt lines the container must not install: its own CUDA build of torch stays, and the
# notebook tools are not needed to train
NOT_IN_THE_CONTAINER = {"torch", "torchvision", "jupyterlab", "ipywidgets", "ipykernel"}


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="launch_training.py", description=__doc__.split("\n\n")[0],
                epilog="train's own options go after --, e.g. -- --epochs 32 --batch-size 256 --precision bf16")
    p.add_argument("--role", help="IAM role ARN for the job (default: this SageMaker notebook's own role)")
    p.add_argument("--instance-type", default="ml.g5.2xlarge", help="default ml.g5.2xlarge (one NVIDIA A10G)")
    p.add_argument("--instance-count", type=int, default=1, help="instances; several need GPU instances")
    p.add_argument("--spot", action=argparse.BooleanOptionalAction, default=False,
                   help="managed spot training: cheaper, may be interrupted; needs --checkpoint-s3-uri")
    p.add_argument("--max-run", type=int, default=7200, help="seconds of training before SageMaker stops the job")
    p.add_argument("--max-wait", type=int, help="spot only: seconds including waits for capacity (default 2 × --max-run)")
    p.add_argument("--checkpoint-s3-uri", help="S3 folder SageMaker keeps the checkpoint folder in; a job resumes from it")
    p.add_argument("--data", help="S3 folder of a dataset (train --data's layout); default: procedural sprites")
    p.add_argument("--output-path", help="S3 folder for model.tar.gz (default: the session's default bucket)")
    p.add_argument("--job-name-prefix", default="diffusion-sprites")
    p.add_argument("--framework-version", default=FRAMEWORK_VERSION, help=f"PyTorch image (default {FRAMEWORK_VERSION})")
    p.add_argument("--py-version", default=PY_VERSION)
    p.add_argument("--wait", action="store_true", help="stream the job's log until it ends")
    p.add_argument("--dry-run", action="store_true", help="print the estimator's arguments as JSON and submit nothing")
    return p


def parse(argv: list[str]) -> tuple[argparse.Namespace, dict]:
    """The launcher's arguments and train's hyperparameters (the part after ``--``), all checked: everything the
    job would refuse is refused here, before anything is uploaded. ``args.init_from``: a local file to ship."""
    split = argv.index("--") if "--" in argv else len(argv)
    args = build_parser().parse_args(argv[:split])
    hyperparameters = train_hyperparameters(argv[split + 1:])
    command = train_command(hyperparameters)
    check(args, command.batch_size)
    check_job_names(args)
    check_train(args, command)
    if command.teacher is not None:  # only --init-from weights travel with a job (ship_init_from)
        raise BadInput(f"--teacher {command.teacher}: the launcher ships --init-from weights only, and a job could not "
                       f"read this file; run distillation where the teacher is (tools/distill.sh)")
    check_train_device(args, command)
    check_sprite_source(args.data, command.n_sprites, fix="drop -- --n-sprites")  # the job's --data is the launcher's
    args.init_from = ship_init_from(args, command, hyperparameters)
    check_image(args)
    return args, hyperparameters


def train_hyperparameters(train_args: list[str]) -> dict:
    """``["--epochs", "32", "--augment"]`` -> ``{"epochs": "32", "augment": True}``."""
    hyperparameters, i = {}, 0
    while i < len(train_args):
        token = train_args[i]
        if not token.startswith("--") or token == "--":
            raise BadInput(f"{token!r} after -- is not a train option; write them as --name value, e.g. -- --epochs 32")
        name, eq, value = token[2:].partition("=")
        if eq:
            hyperparameters[name], i = value, i + 1
        elif i + 1 < len(train_args) and not train_args[i + 1].startswith("--"):
            hyperparameters[name], i = train_args[i + 1], i + 2
        else:
            hyperparameters[name], i = True, i + 1
    return hyperparameters


def train_command(hyperparameters: dict) -> argparse.Namespace:
    """The train command the job will run (train_entry.train_argv), read by train's own parser: a typo fails here,
    and so does an option the job sets itself, however it is spelt (argparse takes --ou for --out)."""
    command = train_parser().parse_args(_train_entry().train_argv(hyperparameters))
    for name, why in SET_BY_THE_JOB.items():
        if getattr(command, name) not in (None, False):
            raise BadInput(f"train --{name} is set by the job: {why}")
    return command


def check_train(args: argparse.Namespace, command: argparse.Namespace) -> None:
    """train's own checks of its options (cli.train_configs, the model's constructor), and the devices the
    instance has, as the job would make them when it starts."""
    train_configs(command)  # the recipe, the schedule, and a flow run's unused options
    with torch.device("meta"):  # the model's own checks (n_feat a multiple of 8, ...), without its memory
        ContextUnet(n_feat=command.n_feat)
    gpu, processes = _is_gpu(args.instance_type), GPUS.get(args.instance_type, 1) * args.instance_count
    if command.cuda_graph and not gpu:
        raise BadInput(f"--cuda-graph needs a CUDA GPU and {args.instance_type} has none; drop --cuda-graph")
    if command.cuda_graph and processes > 1:
        raise BadInput(f"--cuda-graph replays one process's step, and {args.instance_count} × {args.instance_type} "
                       f"runs {processes} under torchrun; drop --cuda-graph (DDP's steps run eagerly)")
    if command.device.startswith("cuda") and not gpu:
        raise BadInput(f"--device {command.device} needs a GPU and {args.instance_type} has none; drop --device")


def ship_init_from(args: argparse.Namespace, command: argparse.Namespace, hyperparameters: dict) -> Path | None:
    """A local --init-from file travels with the job, staged as init/NAME (train_entry.py finds it there), after
    the checks train makes of it; returns it. The hyperparameters then name the staged copy."""
    if command.init_from is None:
        return None
    path = Path(command.init_from)
    if not path.is_file():
        raise BadInput(f"--init-from {path} is not a file on this machine; the launcher uploads the weights it "
                       f"names with the job, so give a local .safetensors file")
    start, _ = load_model(path)
    if start.n_feat != command.n_feat:  # in the launcher's terms: train's options go after --
        raise BadInput(f"{path} has n_feat={start.n_feat} and the job's run n_feat={command.n_feat}; pass "
                       f"-- --n-feat {start.n_feat}, or drop --init-from")
    if args.data is None and start.h != SIZE:
        raise BadInput(f"{path} is a model of {start.h}×{start.h} sprites and the job trains on {SIZE}×{SIZE} "
                       f"procedural ones; give --data of {start.h}×{start.h} sprites, or drop --init-from")
    # then everything else train checks of it, with train's own code (the --data sprites' size is the start's:
    # they are on S3, not here)
    load_start(path, ModelConfig(n_feat=command.n_feat, height=SIZE if args.data is None else start.h))
    for name in [k for k in hyperparameters if "init-from".startswith(k)]:  # argparse took it, however abbreviated
        del hyperparameters[name]
    hyperparameters["init-from"] = f"{INIT}/{path.name}"
    return path


def check_image(args: argparse.Namespace) -> None:
    """--framework-version and --py-version for this instance type, offline: the course's floor, then the SDK's
    own image table and torch_distributed check where the SDK is installed (both raise ValueError)."""
    if not re.fullmatch(r"\d+\.\d+(\.\d+)?", args.framework_version) or \
            tuple(map(int, args.framework_version.split(".")[:2])) < (2, 6):
        raise BadInput(f"--framework-version {args.framework_version!r}: the course needs torch ≥ 2.6; give a "
                       f"version such as {FRAMEWORK_VERSION}")
    sdk = _sdk_checks()
    if sdk is None:  # the dry run needs no SDK; submitting does, and then checks
        return
    image_uris, fw_utils = sdk
    try:
        image_uris.retrieve("pytorch", REGION, version=args.framework_version, py_version=args.py_version,
                            instance_type=args.instance_type, image_scope="training")
        if _is_gpu(args.instance_type):
            fw_utils.validate_torch_distributed_distribution(
                args.instance_type, DISTRIBUTION, args.framework_version, args.py_version, None, ENTRY)
    except ValueError as e:
        raise BadInput(f"--framework-version {args.framework_version} --py-version {args.py_version} on "
                       f"{args.instance_type}: {' '.join(str(e).split())}") from None


def _quiet_sdk() -> None:
    """Before the SDK is imported: what it would print that is not about this job stays unprinted."""
    os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")  # a paragraph on stderr at import
    logging.getLogger("sagemaker.config").setLevel(logging.WARNING)  # its INFO lines go to stdout, into the JSON
    # read at import, for JumpStart models, which the launcher never uses; where it fails it logs a traceback
    logging.getLogger("sagemaker.jumpstart").setLevel(logging.CRITICAL)
    # fit() reports usage to AWS; offline or blocked, that request's failure is logged with a traceback
    logging.getLogger("sagemaker.telemetry").setLevel(logging.CRITICAL)


def _sdk_checks():
    """The SDK's image_uris and fw_utils modules, or None where it is not installed."""
    _quiet_sdk()
    try:
        from sagemaker import fw_utils, image_uris
    except ImportError:
        return None
    return image_uris, fw_utils


def _train_entry():
    """sagemaker/train_entry.py as a module: its train_argv is what the job runs."""
    spec = importlib.util.spec_from_file_location("train_entry", HERE / ENTRY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check(args: argparse.Namespace, batch_size: int) -> None:
    """Every refusal of the launcher's own arguments, in one line, before anything is uploaded."""
    match = re.fullmatch(r"ml\.([a-z][a-z0-9-]*)\.[a-z0-9]+", args.instance_type)
    if not match:
        raise BadInput(f"--instance-type {args.instance_type!r} is not a SageMaker instance type; give e.g. ml.g5.2xlarge")
    family = match.group(1)
    if family.startswith(("trn", "inf")):
        raise BadInput(f"{args.instance_type} has AWS Neuron chips, which train does not use; choose a GPU type "
                       f"(ml.g5.*, ml.p4d.*) or a CPU one")
    if args.instance_count < 1:
        raise BadInput(f"--instance-count must be at least 1, got {args.instance_count}")
    if args.instance_count > 1 and not _is_gpu(args.instance_type):
        raise BadInput(f"--instance-count {args.instance_count} needs GPU instances (SageMaker runs torchrun across "
                       f"instances only on them); choose ml.g5.* or ml.p*.*, or --instance-count 1")
    if args.max_run < 1:
        raise BadInput(f"--max-run must be at least 1 second, got {args.max_run}")
    for name in ("checkpoint_s3_uri", "data", "output_path"):
        value = getattr(args, name)
        if value is not None and not re.fullmatch(r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?", value):
            raise BadInput(f"--{name.replace('_', '-')} {value!r} is not an S3 URI; give s3://bucket/folder")
    if args.spot:
        if args.checkpoint_s3_uri is None:
            raise BadInput("--spot needs --checkpoint-s3-uri: a spot job can be interrupted, and without its "
                           "checkpoints in S3 it starts over")
        if args.max_wait is not None and args.max_wait < args.max_run:
            raise BadInput(f"--max-wait {args.max_wait} is shorter than --max-run {args.max_run}; SageMaker needs "
                           f"max_wait ≥ max_run (give --max-wait {args.max_run} or more)")
    elif args.max_wait is not None:
        raise BadInput("--max-wait applies to spot jobs only; add --spot or drop --max-wait")
    processes = GPUS.get(args.instance_type, 1) * args.instance_count
    if batch_size % processes:  # train's own check (distributed.check_batch_size), said in the launcher's terms
        raise BadInput(f"--batch-size {batch_size} does not split over the {processes} GPUs of {args.instance_count} × "
                       f"{args.instance_type}; give a multiple of {processes}")


MAX_RUN_S = 28 * 24 * 3600  # SageMaker's MaxRuntimeInSeconds: "The maximum value is 28 days" (StoppingCondition)


def check_job_names(args: argparse.Namespace) -> None:
    """What SageMaker's CreateTrainingJob refuses of the role, the name and the run time, refused here."""
    if args.max_run > MAX_RUN_S:
        raise BadInput(f"--max-run {args.max_run} is over SageMaker's limit of 28 days ({MAX_RUN_S} s)")
    if args.role is not None and not re.fullmatch(r"[\w+=,.@/:-]+", args.role):
        raise BadInput(f"--role {args.role!r} is not an IAM role; give its ARN, arn:aws:iam::ACCOUNT:role/NAME")
    # a job's name is the prefix and a 24-character time stamp; SageMaker takes [a-zA-Z0-9](-*[a-zA-Z0-9])* (and the
    # SDK shortens a long prefix to fit its 63 characters)
    if not re.fullmatch(r"[a-zA-Z0-9](-*[a-zA-Z0-9])*", args.job_name_prefix):
        raise BadInput(f"--job-name-prefix {args.job_name_prefix!r}: SageMaker job names take letters, digits and "
                       f"hyphens, starting and ending with a letter or digit; give e.g. diffusion-sprites")


def check_train_device(args: argparse.Namespace, command: argparse.Namespace) -> None:
    """train's --device and distillation options as the job would meet them, on this instance type."""
    if command.distill_steps or command.teacher_substeps != 2 or command.distill_inputs != "data":
        raise BadInput("--distill-steps, --teacher-substeps and --distill-inputs distil a --teacher, which the launcher "
                       "cannot ship; run distillation where the teacher is (tools/distill.sh)")
    device = re.fullmatch(r"auto|cpu|cuda(?::(\d+))?", command.device)
    if device is None:
        raise BadInput(f"--device {command.device!r}: a job's train takes auto, cpu, cuda or cuda:N; drop --device")
    gpus, processes = GPUS.get(args.instance_type, 1), GPUS.get(args.instance_type, 1) * args.instance_count
    if device.group(1) is not None and processes > 1:
        raise BadInput(f"--device {command.device}: torchrun gives each of the {processes} processes its own GPU; "
                       f"drop --device")
    if device.group(1) is not None and int(device.group(1)) >= gpus:
        raise BadInput(f"--device {command.device}: {args.instance_type} has {gpus} GPU; give cuda:0, or drop --device")


def _is_gpu(instance_type: str) -> bool:
    """ml.g* and ml.p* types have NVIDIA GPUs (the SDK's own test, fw_utils._is_gpu_instance)."""
    return instance_type.split(".")[1].startswith(("g", "p"))


def estimator_arguments(args: argparse.Namespace, hyperparameters: dict, source_dir: str, role: str) -> dict:
    """The keyword arguments of ``sagemaker.pytorch.PyTorch``."""
    kwargs = {
        "entry_point": ENTRY,
        "source_dir": source_dir,
        "framework_version": args.framework_version,
        "py_version": args.py_version,
        "role": role,
        "instance_type": args.instance_type,
        "instance_count": args.instance_count,
        "hyperparameters": hyperparameters,
        "base_job_name": args.job_name_prefix,
        "max_run": args.max_run,
        # SageMaker's default, said explicitly: train reads its checkpoints there (distributed.SAGEMAKER_CHECKPOINTS)
        "checkpoint_local_path": str(SAGEMAKER_CHECKPOINTS),
    }
    if args.checkpoint_s3_uri:
        kwargs["checkpoint_s3_uri"] = args.checkpoint_s3_uri
    if args.spot:
        kwargs["use_spot_instances"] = True
        kwargs["max_wait"] = args.max_wait if args.max_wait is not None else 2 * args.max_run
    if args.output_path:
        kwargs["output_path"] = args.output_path
    if _is_gpu(args.instance_type):
        kwargs["distribution"] = {k: dict(v) for k, v in DISTRIBUTION.items()}  # a copy the SDK may change
    return kwargs


def stage_source(folder: Path, init_from: Path | None = None) -> Path:
    """What the job uploads: the package, the entry point, a requirements.txt and the --init-from weights (with
    their card, under init/), not the whole repository.

    The container pip-installs requirements.txt from the source folder ("Using third-party
    libraries", https://sagemaker.readthedocs.io/en/stable/frameworks/pytorch/using_pytorch.html);
    torch is left out so the image's CUDA build stays, and so are the notebook tools.
    """
    shutil.copytree(ROOT / "diffusion_utilities", folder / "diffusion_utilities",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy2(HERE / ENTRY, folder / ENTRY)
    kept = [line for line in (ROOT / "requirements.txt").read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#")
            and re.split(r"[<>=!~ \[;]", line.strip(), maxsplit=1)[0].lower() not in NOT_IN_THE_CONTAINER]
    (folder / "requirements.txt").write_text("\n".join(kept) + "\n")
    for path in [init_from, card_path(init_from)] if init_from is not None else []:
        if path.is_file():
            (folder / INIT).mkdir(exist_ok=True)
            shutil.copy2(path, folder / INIT / path.name)
    return folder


def _sdk():
    """The SDK's sagemaker module and its PyTorch estimator, imported only to submit."""
    _quiet_sdk()
    try:
        import sagemaker
        from sagemaker.pytorch import PyTorch
    except ImportError:
        try:  # this repository's own sagemaker/ folder imports as an empty namespace package: not the SDK
            spec = importlib.util.find_spec("sagemaker")
        except ValueError:  # a module in sys.modules without a spec
            spec = None
        if spec is not None and spec.origin not in (None, "namespace"):
            raise BadInput("this SageMaker Python SDK has no sagemaker.pytorch.PyTorch (v3 replaced the estimators "
                           "with ModelTrainer); pip install 'sagemaker>=2.257,<3'") from None
        raise BadInput("the SageMaker Python SDK is not installed; pip install 'sagemaker>=2.257,<3' "
                       "(or pip install -e '.[sagemaker]')") from None
    return sagemaker, PyTorch


def submit(args: argparse.Namespace, hyperparameters: dict) -> None:
    sagemaker, PyTorch = _sdk()
    role = args.role
    if role is None:
        try:
            role = sagemaker.get_execution_role()
        except ValueError:
            raise BadInput("no --role given, and this is not a SageMaker notebook with a role of its own; "
                           "pass --role arn:aws:iam::ACCOUNT:role/NAME") from None
    inputs = {"training": args.data} if args.data else None
    with tempfile.TemporaryDirectory(prefix="diffusion-sprites-job-") as staging:
        source = str(stage_source(Path(staging), args.init_from))
        try:
            estimator = PyTorch(**estimator_arguments(args, hyperparameters, source, role))
        except ValueError as e:  # what check_image does not cover; nothing is uploaded before fit()
            raise BadInput(f"the SageMaker SDK refused the job: {' '.join(str(e).split())}") from None
        _check_credentials(estimator)
        try:
            estimator.fit(inputs=inputs, wait=args.wait)  # uploads the staged folder before it returns
        except _aws_errors() as e:  # AWS said no (permissions, a bucket, a quota): its words, in one line
            raise AwsRefused(f"AWS refused the job: {' '.join(str(e).split())}") from None
    name = estimator.latest_training_job.name
    where = f"{args.output_path.rstrip('/')}/{name}" if args.output_path else f"the session's default bucket, under {name}/"
    print(f"submitted training job {name}; its weights go to {where} (output/model.tar.gz); "
          f"follow it with: aws sagemaker describe-training-job --training-job-name {name}")


class AwsRefused(Exception):
    """The job was checked and sent, and AWS refused it (exit 1: not a bad argument)."""


def _check_credentials(estimator) -> None:
    """No AWS credentials: one line now, not a traceback from inside fit()."""
    boto = getattr(getattr(estimator, "sagemaker_session", None), "boto_session", None)
    if boto is not None and boto.get_credentials() is None:
        raise BadInput("no AWS credentials found (aws configure, AWS_PROFILE, or a SageMaker notebook's role); "
                       "set them up and launch again: nothing was uploaded")


def _aws_errors() -> tuple:
    try:  # the SDK's own dependency; absent with the SDK's stand-in
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:
        return ()
    return BotoCoreError, ClientError


def main(argv: list[str] | None = None) -> int:
    try:
        args, hyperparameters = parse(sys.argv[1:] if argv is None else argv)
        if args.dry_run:
            shipped = f", {INIT}/{args.init_from.name}" if args.init_from else ""
            shown = estimator_arguments(args, hyperparameters, f"<a temporary copy of diffusion_utilities/, {ENTRY}, "
                                        f"requirements.txt{shipped}>", args.role or "<this notebook's execution role>")
            print(json.dumps({"estimator": shown, "fit": {"inputs": {"training": args.data} if args.data else None,
                                                          "wait": args.wait}}, indent=2))
            return 0
        submit(args, hyperparameters)
    except BadInput as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except AwsRefused as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
