"""Packaging for tff_lab.

Dependencies are installed from the fully pinned `requirements.lock` (see BUILD.md): TFF 0.87.0
pins `jaxlib==0.4.14`, which PyPI does not serve, so `pip install tensorflow-federated` cannot
resolve. `install_requires` therefore names only tff_lab's direct imports, loosely, and the lock
(installed first, with `--no-deps`) decides the exact versions, including TFF itself.
"""

import setuptools

setuptools.setup(
    name='tff_lab',
    version='0.1.0',
    description='A research toolkit for federated learning on TensorFlow Federated.',
    packages=setuptools.find_packages(include=['tff_lab', 'tff_lab.*']),
    python_requires='>=3.10,<3.12',
    install_requires=[
        'absl-py',
        'matplotlib',
        'ml-collections',
        'numpy',
        'optuna',
        'scikit-learn',
        'tensorflow>=2.14,<2.15',
        'tensorflow-federated==0.87.0',
        'tqdm',
    ],
    extras_require={'test': ['pytest', 'pytest-xdist', 'nbclient', 'nbformat', 'ipykernel']},
    entry_points={
        'console_scripts': [
            'tff-lab-run=tff_lab.cli:run_experiment_app',
            'tff-lab-worker=tff_lab.runtime.worker_cli:main',
            'tff-lab-dp=tff_lab.privacy.cli:run_app',
            'tff-lab-data-stats=tff_lab.data_stats_cli:main',
            'tff-lab-reproduce=tff_lab.baselines.cli:run_app',
            'tff-lab-compare=tff_lab.compare_cli:main',
            'tff-lab-tune=tff_lab.tuning.cli:main',
        ],
    },
)
