import os

# TensorFlow prints a CPU-feature banner and C++ info logs on import; container logs are
# easier to read without them. Set before anything imports TensorFlow.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from trainer.cli import main

raise SystemExit(main())
