"""tfx-recsys: a two-stage recommender as a TFX pipeline.

The repository keeps the layout of the TFX templates (`pipeline/`,
`components/` at the top level); they install as subpackages of `tfx_recsys`.
Dependencies are pinned in requirements/requirements.lock and installed by
`make setup`; install_requires below only names the direct ones.
"""

from setuptools import find_packages, setup

setup(
    name="tfx-recsys",
    version="0.1.0",
    description="Two-stage recommender (TFRS retrieval + ranking) as a TFX pipeline",
    python_requires=">=3.11,<3.12",
    packages=(
        ["tfx_recsys"]
        + [f"tfx_recsys.{p}" for p in find_packages("tfx_recsys")]
        + ["tfx_recsys.pipeline", "tfx_recsys.components"]
        + [f"tfx_recsys.components.{p}" for p in find_packages("components")]
    ),
    package_dir={
        "tfx_recsys.pipeline": "pipeline",
        "tfx_recsys.components": "components",
    },
    # Files beside the code that it reads at run time.
    package_data={"tfx_recsys.report": ["report.css"]},
    install_requires=[
        "tfx==1.21.0",
        "tensorflow==2.20.0",
        "tf-keras==2.20.1",
        "tensorflow-recommenders==0.7.7",
        "scann==1.4.2",
    ],
    entry_points={"console_scripts": ["recsys=tfx_recsys.cli:main"]},
)
