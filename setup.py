from setuptools import find_packages, setup

setup(
    name="darkcsp",
    version="0.1.0",
    description=(
        "Darknet .cfg files (CSPNet dialect included) as PyTorch models, "
        "with Darknet .weights read and write"
    ),
    python_requires=">=3.10",
    packages=find_packages(include=["darkcsp", "darkcsp.*"]),
    install_requires=[
        "numpy",
        "torch>=2.1",
        # OpenCV 5 removed readNetFromDarknet, which the OpenCV DNN path relies on.
        "opencv-python-headless>=4.5,<5",
        "pyyaml",
        "tqdm",
        "pycocotools",
        "scipy",
        # Loss/mAP charts and PR curves are written as PNG; matplotlib (Agg) draws them better
        # than anything we would write on top of OpenCV.
        "matplotlib",
    ],
    extras_require={
        "test": ["pytest", "hypothesis", "onnxruntime", "onnx"],
        "onnx": ["onnxruntime", "onnx"],
    },
    entry_points={
        "console_scripts": [
            "darkcsp = darkcsp.cli:main",
        ],
    },
)
